"""Per-feature moments of what a BN layer normalises: the sums population statistics and the drift monitor share."""

from dataclasses import dataclass

import numpy as np
import torch

# Up to this many values a layer's moments are summed in numpy, in float64: for the few rows of a typical
# request torch's per-call overhead is most of the cost. Beyond, torch sums in float32, with cascade
# summation (relative error about 1e-7), several times faster than numpy's column sums.
NUMPY_MOMENTS_VALUES = 2**16


def feature_rows(activations: torch.Tensor) -> torch.Tensor:
    """(values, features): one row per value a BN feature normalises (samples × positions).

    A view, not a copy, for 2-D and channels_last activations.
    """
    if activations.dim() == 2:
        return activations
    return activations.movedim(1, -1).reshape(-1, activations.shape[1])


@dataclass(frozen=True)
class BatchMoments:
    """Count, sum and sum of squares per feature (dim 1) of the values one BN layer saw in one batch."""

    count: int
    total: np.ndarray
    squares: np.ndarray

    @classmethod
    def of(cls, values: torch.Tensor) -> "BatchMoments":
        rows = feature_rows(values)
        if rows.numel() <= NUMPY_MOMENTS_VALUES:
            array = rows.numpy().astype(np.float64)  # once: a sum that casts as it goes costs half as much again
            return cls(len(array), array.sum(axis=0), np.einsum("ij,ij->j", array, array))
        return cls(len(rows), rows.sum(dim=0).double().numpy(), rows.square().sum(dim=0).double().numpy())


class ShiftedMoments:
    """Sums of (x − K) and (x − K)² in float64, K from the first batch: stable where mean² ≫ variance."""

    def __init__(self) -> None:
        self.count = 0
        self.shift: torch.Tensor | None = None
        self.total: torch.Tensor | None = None
        self.squares: torch.Tensor | None = None

    def add(self, rows: torch.Tensor) -> None:
        if self.shift is None:
            self.shift = rows.mean(dim=0)
            self.total = torch.zeros_like(self.shift)
            self.squares = torch.zeros_like(self.shift)
        centred = rows - self.shift
        self.count += len(rows)
        self.total += centred.sum(dim=0)
        self.squares += (centred * centred).sum(dim=0)

    def mean_and_unbiased_variance(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.shift is not None and self.total is not None and self.squares is not None
        offset = self.total / self.count
        variance = (self.squares - self.count * offset * offset) / (self.count - 1)
        return self.shift + offset, variance

"""Covariate shift at serving time: the pre-BN activations served, against BN's frozen statistics.

Per BN layer and feature only a count, a sum and a sum of squares are kept (float64), never request data.
Variances are compared as BN uses them, with its ε added, so a feature that is constant both in
training and in serving (a dead unit) reads as unchanged rather than as a collapse.
"""

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import torch

from bncore.bn.folding import GAMMA_FLOOR, PreBatchNorm, ServedBatchNorm
from bncore.bn.moments import BatchMoments
from bncore.storage.drift_store import LayerMoments, PublishedMoments


@dataclass(frozen=True)
class DriftThresholds:
    """Named as the settings they come from: `from_settings(DriftThresholds, settings, prefix="drift_")`."""

    mean_shift_threshold: float  # a layer drifts when its mean_shift is above this...
    variance_ratio_min: float  # ...or its variance_ratio is outside [min, max]
    variance_ratio_max: float
    min_samples: int  # with fewer samples served nothing is flagged


@dataclass(frozen=True)
class LayerDrift:
    name: str
    samples: int
    mean_shift: float | None  # None before the first sample, or when every γ ≈ 0
    variance_ratio: float | None
    drifted: bool


@dataclass(frozen=True)
class DriftReport:
    since: datetime
    samples_seen: int
    thresholds: DriftThresholds
    layers: list[LayerDrift]

    @property
    def drifted(self) -> bool:
        return any(layer.drifted for layer in self.layers)


@dataclass(frozen=True)
class FeatureStatistics:
    """Per-feature mean and (population) variance of what a BN layer has seen while serving."""

    samples: int
    mean: torch.Tensor
    variance: torch.Tensor


Seen = BatchMoments | np.ndarray  # a pass's moments, or a copy of a small pass's feature rows (values, features) to sum later
# Per layer, room for this many values waiting to be summed (32 KiB of float32, taken on its first small
# pass): a cached model of many layers holds little, and one sum still covers dozens of one-row requests.
PENDING_VALUES = 8192


class _Moments:
    """Running moments of what one BN layer saw; the caller holds the monitor's lock and folds before reading.

    For a folded layer they are of the folded layer's output, and `unfold` turns them into those of BN's input.
    Small passes' feature rows are copied into `pending` and summed together, before any reading and once it
    is half full (the monitor sums one layer a pass) or full: one sum for many one-row requests instead of one
    each, over rows already side by side.
    """

    def __init__(self, features: int, unfold: PreBatchNorm | None) -> None:
        self.unfold = unfold
        self.samples = 0
        self.count = 0
        self.total = np.zeros(features)
        self.squares = np.zeros(features)
        self.pending: np.ndarray | None = None  # numpy: a slice assignment costs a fraction of torch's
        self.pending_rows = 0

    def add(self, samples: int, seen: Seen) -> None:
        self.samples += samples
        if isinstance(seen, BatchMoments):
            self._add(seen)
            return
        if self.pending is None:
            self.pending = np.empty((max(1, PENDING_VALUES // seen.shape[1]), seen.shape[1]), seen.dtype)
        rows = len(seen)
        if self.pending_rows + rows > len(self.pending):
            self.fold()
        if rows > len(self.pending):
            self._add(BatchMoments.of(torch.from_numpy(seen)))
            return
        self.pending[self.pending_rows : self.pending_rows + rows] = seen
        self.pending_rows += rows

    @property
    def half_full(self) -> bool:
        return self.pending is not None and 2 * self.pending_rows >= len(self.pending)

    def fold(self) -> None:
        """Sum the pending feature rows into the moments."""
        if self.pending_rows:
            self._add(BatchMoments.of(torch.from_numpy(self.pending[: self.pending_rows])))
            self.pending_rows = 0

    def _add(self, batch: BatchMoments) -> None:
        self.count += batch.count
        self.total += batch.total
        self.squares += batch.squares

    def published(self) -> LayerMoments:
        return LayerMoments(self.samples, self.count, self.total.tolist(), self.squares.tolist())

    def statistics(self, others: Sequence[LayerMoments] = ()) -> FeatureStatistics:
        """Of what this monitor saw, and what `others` (other processes' monitors of the model) saw."""
        samples = self.samples + sum(other.samples for other in others)
        count = max(self.count + sum(other.count for other in others), 1)
        total = self.total + sum((np.asarray(other.total) for other in others), np.zeros_like(self.total))
        squares = self.squares + sum((np.asarray(other.squares) for other in others), np.zeros_like(self.squares))
        mean = torch.from_numpy(total / count)
        variance = (torch.from_numpy(squares / count) - mean.square()).clamp(min=0)
        if self.unfold is not None:
            mean, variance = self.unfold.moments(mean, variance)
        return FeatureStatistics(samples, mean, variance)


class DriftMonitor:
    """Thread-safe running moments of each BN layer's input, from the moment a model is loaded."""

    def __init__(self, batchnorms: Sequence[ServedBatchNorm]) -> None:
        self.since = datetime.now(timezone.utc)
        self._reference = {bn.name: bn.module for bn in batchnorms}
        self._moments = {bn.name: _Moments(bn.module.num_features, bn.unfold) for bn in batchnorms}
        self._samples = 0
        self._lock = threading.Lock()

    def record(self, samples: int, batch: Mapping[str, Seen]) -> None:
        """Add one batch of `samples` rows: what each BN layer saw, as ServingGraph.forward shows it."""
        with self._lock:
            self._samples += samples
            due = None
            for name, seen in batch.items():
                moments = self._moments[name]
                moments.add(samples, seen)
                if due is None and moments.half_full:
                    due = moments
            # One layer's sum a pass, from half full: layers of one width fill together, and summing them all
            # in the pass that fills them (what full buffers force) would hold up that one request several times over.
            if due is not None:
                due.fold()

    def _fold(self) -> None:
        """Sum every layer's pending feature rows; the caller holds the lock."""
        for moments in self._moments.values():
            moments.fold()

    @property
    def samples(self) -> int:
        return self._samples

    def published(self) -> PublishedMoments:
        """The moments as other processes read them (bncore.storage.drift_store)."""
        with self._lock:
            self._fold()
            layers = {name: moments.published() for name, moments in self._moments.items()}
            return PublishedMoments(self.since, self._samples, layers)

    def statistics(self) -> dict[str, FeatureStatistics]:
        return self._snapshot(())[1]

    def report(self, thresholds: DriftThresholds, others: Sequence[PublishedMoments] = ()) -> DriftReport:
        """This monitor's moments merged with `others`, the other API processes' monitors of the same model."""
        samples, statistics = self._snapshot(others)
        layers = [self._layer_drift(name, stats, thresholds) for name, stats in statistics.items()]
        since = min([self.since, *(other.since for other in others)])
        return DriftReport(since, samples, thresholds, layers)

    def _snapshot(self, others: Sequence[PublishedMoments]) -> tuple[int, dict[str, FeatureStatistics]]:
        with self._lock:
            self._fold()
            samples = self._samples + sum(other.samples for other in others)
            return samples, {
                name: moments.statistics([other.layers[name] for other in others if name in other.layers])
                for name, moments in self._moments.items()
            }

    def _layer_drift(self, name: str, served: FeatureStatistics, thresholds: DriftThresholds) -> LayerDrift:
        """mean_shift: mean over features of |μ_serve − μ_train|/σ_train; variance_ratio: of σ²_serve/σ²_train.

        Features with γ ≈ 0 are left out: the network ignores them, and a folded layer cannot show them.
        """
        bn = self._reference[name]
        used = bn.weight.detach().abs() > GAMMA_FLOOR
        if served.samples == 0 or not used.any():
            return LayerDrift(name, served.samples, None, None, drifted=False)
        train_variance = bn.running_var.double() + bn.eps
        shift = (served.mean - bn.running_mean.double()).abs() / train_variance.sqrt()
        ratio = (served.variance + bn.eps) / train_variance
        mean_shift, variance_ratio = shift[used].mean().item(), ratio[used].mean().item()
        drifted = served.samples >= thresholds.min_samples and (
            mean_shift > thresholds.mean_shift_threshold
            or not thresholds.variance_ratio_min <= variance_ratio <= thresholds.variance_ratio_max
        )
        return LayerDrift(name, served.samples, mean_shift, variance_ratio, drifted)

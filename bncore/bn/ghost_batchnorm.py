"""Ghost Batch Normalization (Hoffer et al. 2017): BN statistics over sub-batches of a fixed size.

In training each virtual batch of `virtual_batch_size` samples is normalised with its own mean and
biased variance, and the running statistics take one update per virtual batch; a trailing
sub-batch of a single sample joins the one before it, since BN needs two values per feature.
At inference it is plain BN, so the rest of the service sees a BN layer.
"""

import torch
from torch import nn
from torch.nn import functional as F


class _GhostBatchNorm(nn.modules.batchnorm._BatchNorm):
    def __init__(self, num_features: int, virtual_batch_size: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True, track_running_stats=True)
        self.virtual_batch_size = virtual_batch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not self.training or len(x) <= self.virtual_batch_size:
            return super().forward(x)
        chunks = list(x.split(self.virtual_batch_size))
        if len(chunks[-1]) == 1:
            chunks[-2:] = [torch.cat(chunks[-2:])]
        return torch.cat([self._normalise(chunk) for chunk in chunks])

    def _normalise(self, chunk: torch.Tensor) -> torch.Tensor:
        self.num_batches_tracked += 1
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        return F.batch_norm(chunk, self.running_mean, self.running_var, self.weight, self.bias, True, momentum, self.eps)


class GhostBatchNorm1d(_GhostBatchNorm, nn.BatchNorm1d):
    """Ghost BN of (N, C) or (N, C, L) inputs."""


class GhostBatchNorm2d(_GhostBatchNorm, nn.BatchNorm2d):
    """Ghost BN of (N, C, H, W) inputs."""

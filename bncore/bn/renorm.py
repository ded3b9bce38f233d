"""Batch Renormalization (Ioffe 2017): training that normalises as inference will.

In training, the batch statistics are corrected towards the moving averages:
x̂ = (x − μ_B)/σ_B · r + d, with r = clip(σ_B/σ, 1/r_max, r_max) and d = clip((μ_B − μ)/σ, −d_max, d_max)
held constant in the backward pass. At inference the layer is plain BN with its moving averages,
so it subclasses PyTorch's BN: reading layers, folding, population statistics, drift and ONNX see BN.

The moving averages are kept in BN's buffers. The paper averages σ itself, σ ← σ + α(σ_B − σ);
`running_var` holds σ² − ε, so that eval mode's sqrt(running_var + ε) is exactly that σ.
"""

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class RenormLimits:
    """r_max and d_max: plain BN (1, 0) for `warmup_steps` steps, then relaxed linearly over as many."""

    r_max: float = 3.0
    d_max: float = 5.0
    warmup_steps: int = 1000

    def at(self, step: int) -> tuple[float, float]:
        if step < self.warmup_steps:
            return 1.0, 0.0
        progress = min(1.0, (step - self.warmup_steps) / self.warmup_steps) if self.warmup_steps else 1.0
        return 1.0 + progress * (self.r_max - 1.0), progress * self.d_max


class _BatchRenorm(nn.modules.batchnorm._BatchNorm):
    def __init__(self, num_features: int, limits: RenormLimits, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True, track_running_stats=True)
        self.limits = limits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not self.training:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        batch_mean = x.mean(dim=dims)
        batch_std = (x.var(dim=dims, unbiased=False) + self.eps).sqrt()
        running_std = (self.running_var + self.eps).sqrt()
        r_max, d_max = self.limits.at(int(self.num_batches_tracked))
        with torch.no_grad():
            r = (batch_std / running_std).clamp(1 / r_max, r_max)
            d = ((batch_mean - self.running_mean) / running_std).clamp(-d_max, d_max)
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
            self.running_mean += momentum * (batch_mean - self.running_mean)
            self.running_var.copy_((running_std + momentum * (batch_std - running_std)).square() - self.eps)
            self.num_batches_tracked += 1
        shape = (1, -1) + (1,) * (x.dim() - 2)
        normalised = (x - batch_mean.view(shape)) / batch_std.view(shape) * r.view(shape) + d.view(shape)
        return normalised * self.weight.view(shape) + self.bias.view(shape)


class BatchRenorm1d(_BatchRenorm, nn.BatchNorm1d):
    """Batch Renormalization of (N, C) or (N, C, L) inputs."""


class BatchRenorm2d(_BatchRenorm, nn.BatchNorm2d):
    """Batch Renormalization of (N, C, H, W) inputs."""

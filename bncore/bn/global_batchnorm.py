"""BN over the global batch of a data-parallel job, on any device the process group reaches (gloo on CPU).

PyTorch's `nn.SyncBatchNorm` refuses CPU tensors. This is the same computation: the forward pass
all-reduces each channel's count, sum and sum of squares, the backward pass the sums of the output
gradient and of the gradient times x̂, so every process normalises with the global batch's mean and
biased variance and its gradients are those of one process holding the whole batch. The sums are
float64 and shifted by the running mean (the same on every process), so cancellation costs nothing.
"""

from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """(values, channels): one row per value a channel normalises."""
    return x.movedim(1, -1).reshape(-1, x.shape[1])


def _all_reduce(tensor: torch.Tensor, group: Any) -> torch.Tensor:
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    return tensor


class _GlobalBatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        running_mean: torch.Tensor,
        running_var: torch.Tensor,
        eps: float,
        momentum: float,
        group: Any,
    ) -> torch.Tensor:
        rows = _channels_last(x).double() - running_mean.double()
        sums = torch.cat([torch.tensor([float(len(rows))], dtype=torch.float64), rows.sum(0), rows.square().sum(0)])
        sums = _all_reduce(sums, group)
        channels = x.shape[1]
        count, total, squares = sums[0], sums[1 : 1 + channels], sums[1 + channels :]
        offset = total / count
        variance = (squares / count - offset.square()).clamp(min=0)
        mean = running_mean.double() + offset
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(momentum * mean.to(running_mean.dtype))
            unbiased = variance * count / (count - 1)
            running_var.mul_(1 - momentum).add_(momentum * unbiased.to(running_var.dtype))
        shape = (1, -1) + (1,) * (x.dim() - 2)
        invstd = (variance + eps).rsqrt()
        normalised = ((x.double() - mean.view(shape)) * invstd.view(shape)).to(x.dtype)
        ctx.save_for_backward(normalised, weight, invstd.to(x.dtype))
        ctx.count, ctx.group = count, group
        return normalised * weight.view(shape) + bias.view(shape)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        normalised, weight, invstd = ctx.saved_tensors
        grad_rows, normalised_rows = _channels_last(grad_output), _channels_last(normalised)
        local_grad_bias = grad_rows.sum(0)
        local_grad_weight = (grad_rows * normalised_rows).sum(0)
        # The gradient of x couples every process's values through the global mean and variance.
        sums = _all_reduce(torch.cat([local_grad_bias, local_grad_weight]).double(), ctx.group)
        channels = weight.shape[0]
        mean_grad = (sums[:channels] / ctx.count).to(grad_output.dtype)
        mean_grad_normalised = (sums[channels:] / ctx.count).to(grad_output.dtype)
        shape = (1, -1) + (1,) * (grad_output.dim() - 2)
        grad_x = (weight * invstd).view(shape) * (
            grad_output - mean_grad.view(shape) - normalised * mean_grad_normalised.view(shape)
        )
        # γ and β get this process's share only: DistributedDataParallel averages them across processes.
        return grad_x, local_grad_weight, local_grad_bias, None, None, None, None, None


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A BN layer that normalises with the statistics of the global batch while training in a process group.

    Outside a process group, or in eval mode, it is plain BN; its state dict is BN's.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, group: Any = None) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True, track_running_stats=True)
        self.group = group

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N, C, ...), got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not self.training or not dist.is_available() or not dist.is_initialized():
            return super().forward(x)
        self.num_batches_tracked += 1
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        return _GlobalBatchNormFunction.apply(
            x, self.weight, self.bias, self.running_mean, self.running_var, self.eps, momentum, self.group
        )

    @classmethod
    def convert(cls, module: nn.Module, group: Any = None) -> nn.Module:
        """`module` with every BN layer replaced by a GlobalBatchNorm holding the same parameters and buffers."""
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, cls):
            converted = cls(module.num_features, module.eps, module.momentum, group)
            converted.load_state_dict(module.state_dict())
            converted.train(module.training)
            return converted
        for name, child in module.named_children():
            module.add_module(name, cls.convert(child, group))
        return module

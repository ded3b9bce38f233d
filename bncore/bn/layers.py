"""Reading the Batch Normalization layers of a network."""

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class BatchNormLayer:
    """One BN layer's learned affine parameters (γ, β) and frozen test-time statistics."""

    name: str
    num_features: int
    eps: float
    momentum: float | None
    gamma: list[float]
    beta: list[float]
    running_mean: list[float]
    running_var: list[float]
    num_batches_tracked: int


def batchnorm_layers(network: nn.Module) -> list[BatchNormLayer]:
    return [
        BatchNormLayer(
            name=name,
            num_features=module.num_features,
            eps=module.eps,
            momentum=module.momentum,
            gamma=module.weight.detach().cpu().tolist(),
            beta=module.bias.detach().cpu().tolist(),
            running_mean=module.running_mean.cpu().tolist(),
            running_var=module.running_var.cpu().tolist(),
            num_batches_tracked=int(module.num_batches_tracked),
        )
        for name, module in network.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
    ]

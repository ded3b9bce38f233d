"""Early stopping on validation loss, keeping the weights of the best epoch seen."""

import math
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class BestEpoch:
    """The epoch with the lowest validation loss so far and the network's state (weights and BN buffers) after it."""

    patience: int
    epoch: int | None = None
    val_loss: float = math.inf
    state: dict[str, torch.Tensor] = field(default_factory=dict)

    def update(self, epoch: int, val_loss: float, network: nn.Module) -> None:
        if val_loss < self.val_loss:
            self.epoch, self.val_loss = epoch, val_loss
            self.state = {name: value.detach().clone() for name, value in network.state_dict().items()}

    def should_stop(self, epoch: int) -> bool:
        """True once `patience` epochs in a row ended without a lower validation loss."""
        return self.epoch is not None and epoch - self.epoch >= self.patience

    def restore_into(self, network: nn.Module) -> None:
        network.load_state_dict(self.state)

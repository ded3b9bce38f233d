"""Epoch checkpoints: everything a lost job needs to go on exactly where it stopped.

Network weights and BN buffers, optimizer state, the shuffling generator and the metrics so far,
as one safetensors file (tensors) with a JSON header (the rest). Resuming from one gives the
same model, bit for bit, as a run that was never interrupted.
"""

import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bncore.training.epoch_metrics import EpochMetrics

NETWORK, OPTIMIZER, SHUFFLE = "network.", "optimizer.", "shuffle.state"


@dataclass
class Checkpoint:
    epoch: int
    history: list[EpochMetrics]
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]

    @classmethod
    def capture(
        cls,
        epoch: int,
        history: list[EpochMetrics],
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        shuffle: torch.Generator,
    ) -> "Checkpoint":
        tensors = {NETWORK + name: value for name, value in network.state_dict().items()}
        scalars: dict[str, Any] = {}
        optimizer_state = optimizer.state_dict()
        for index, state in optimizer_state["state"].items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{OPTIMIZER}{index}.{key}"] = value
                else:
                    scalars[f"{index}.{key}"] = value
        tensors[SHUFFLE] = shuffle.get_state()
        header = {
            "epoch": epoch,
            "history": [metrics.__dict__ for metrics in history],
            "param_groups": optimizer_state["param_groups"],
            "optimizer_scalars": scalars,
        }
        return cls(epoch, list(history), tensors, {"checkpoint": json.dumps(header)})

    @classmethod
    def from_stored(cls, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> "Checkpoint":
        header = json.loads(metadata["checkpoint"])
        # Checkpoints written before epochs were timed have no `seconds`.
        history = [EpochMetrics(**{"seconds": 0.0, **metrics}) for metrics in header["history"]]
        return cls(header["epoch"], history, tensors, metadata)

    def restore(self, network: nn.Module, optimizer: torch.optim.Optimizer, shuffle: torch.Generator) -> None:
        """Put network, optimizer and generator back in the state they had at the end of `epoch`."""
        network.load_state_dict({name[len(NETWORK) :]: value for name, value in self.tensors.items() if name.startswith(NETWORK)})
        header = json.loads(self.metadata["checkpoint"])
        state: dict[int, dict[str, Any]] = {}
        for name, value in self.tensors.items():
            if name.startswith(OPTIMIZER):
                index, key = name[len(OPTIMIZER) :].split(".", 1)
                state.setdefault(int(index), {})[key] = value
        for name, value in header["optimizer_scalars"].items():
            index, key = name.split(".", 1)
            state.setdefault(int(index), {})[key] = value
        optimizer.load_state_dict({"state": state, "param_groups": header["param_groups"]})
        shuffle.set_state(self.tensors[SHUFFLE])

"""Epoch checkpoints: everything a lost job needs to go on exactly where it stopped.

Network weights and BN buffers, optimizer and learning-rate scheduler state, the shuffling and
augmentation generators, the best epoch's weights under early stopping and the metrics so far, as one
safetensors file (tensors) with a JSON header (the rest; never a pickle). Resuming from one gives the
same model, bit for bit, as a run that was never interrupted.
"""

import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from bncore.training.early_stopping import BestEpoch
from bncore.training.epoch_metrics import EpochMetrics

NETWORK, OPTIMIZER, SHUFFLE, AUGMENT, BEST = "network.", "optimizer.", "shuffle.state", "augment.state", "best."


@dataclass(frozen=True)
class TrainingState:
    """The live objects of a run that a checkpoint saves and, in place, restores."""

    network: nn.Module
    optimizer: torch.optim.Optimizer
    shuffle: torch.Generator
    scheduler: LRScheduler | None = None
    augment: torch.Generator | None = None
    best: BestEpoch | None = None


@dataclass
class Checkpoint:
    epoch: int
    history: list[EpochMetrics]
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]

    @classmethod
    def capture(cls, epoch: int, history: list[EpochMetrics], state: TrainingState) -> "Checkpoint":
        tensors = {NETWORK + name: value for name, value in state.network.state_dict().items()}
        scalars: dict[str, Any] = {}
        optimizer_state = state.optimizer.state_dict()
        for index, parameter_state in optimizer_state["state"].items():
            for key, value in parameter_state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{OPTIMIZER}{index}.{key}"] = value
                else:
                    scalars[f"{index}.{key}"] = value
        tensors[SHUFFLE] = state.shuffle.get_state()
        header = {
            "epoch": epoch,
            "history": [metrics.__dict__ for metrics in history],
            "param_groups": optimizer_state["param_groups"],
            "optimizer_scalars": scalars,
        }
        scheduler, augment, best = state.scheduler, state.augment, state.best
        if scheduler is not None:
            header["scheduler"] = scheduler.state_dict()  # numbers only: the factor is a function, not stored
        if augment is not None:
            tensors[AUGMENT] = augment.get_state()
        if best is not None and best.epoch is not None:
            header["best"] = {"epoch": best.epoch, "val_loss": best.val_loss}
            tensors.update({BEST + name: value for name, value in best.state.items()})
        return cls(epoch, list(history), tensors, {"checkpoint": json.dumps(header)})

    @classmethod
    def from_stored(cls, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> "Checkpoint":
        header = json.loads(metadata["checkpoint"])
        # Checkpoints written before epochs were timed have no `seconds`.
        history = [EpochMetrics(**{"seconds": 0.0, **metrics}) for metrics in header["history"]]
        return cls(header["epoch"], history, tensors, metadata)

    def restore(self, into: TrainingState) -> None:
        """Put everything back in the state it had at the end of `epoch`.

        A checkpoint from before schedules, augmentation or early stopping existed has none of their
        state; its job has none of them either (constant rate, no augmentation, no early stopping).
        """
        into.network.load_state_dict(
            {name[len(NETWORK) :]: value for name, value in self.tensors.items() if name.startswith(NETWORK)}
        )
        header = json.loads(self.metadata["checkpoint"])
        state: dict[int, dict[str, Any]] = {}
        for name, value in self.tensors.items():
            if name.startswith(OPTIMIZER):
                index, key = name[len(OPTIMIZER) :].split(".", 1)
                state.setdefault(int(index), {})[key] = value
        for name, value in header["optimizer_scalars"].items():
            index, key = name.split(".", 1)
            state.setdefault(int(index), {})[key] = value
        into.optimizer.load_state_dict({"state": state, "param_groups": header["param_groups"]})
        into.shuffle.set_state(self.tensors[SHUFFLE])
        scheduler, augment, best = into.scheduler, into.augment, into.best
        if scheduler is not None and "scheduler" in header:
            scheduler.load_state_dict(header["scheduler"])
        if augment is not None and AUGMENT in self.tensors:
            augment.set_state(self.tensors[AUGMENT])
        if best is not None and "best" in header:
            best.epoch, best.val_loss = header["best"]["epoch"], header["best"]["val_loss"]
            best.state = {name[len(BEST) :]: value for name, value in self.tensors.items() if name.startswith(BEST)}

"""The training loop. Reads top to bottom: optimizer, then per epoch a shuffled pass and an evaluation."""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bncore.datasets import PreparedData
from bncore.specs import TrainingSpec

EVAL_BATCH = 4096


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float


class TrainingCancelled(Exception):
    pass


class TrainingDiverged(Exception):
    def __init__(self, epoch: int, loss: float) -> None:
        super().__init__(
            f"the training loss became {loss} in epoch {epoch}; lower the learning rate or use batchnorm"
        )
        self.epoch = epoch


def make_optimizer(network: nn.Module, spec: TrainingSpec) -> torch.optim.Optimizer:
    params = network.parameters()
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.learning_rate, momentum=spec.momentum, weight_decay=spec.weight_decay)
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.learning_rate, weight_decay=spec.weight_decay)
    return torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=spec.weight_decay)


@torch.inference_mode()
def evaluate(network: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy in eval mode, i.e. with the running BN statistics."""
    network.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for start in range(0, len(x), EVAL_BATCH):
        logits = network(x[start:start + EVAL_BATCH])
        target = y[start:start + EVAL_BATCH]
        loss_sum += F.cross_entropy(logits, target, reduction="sum")
        correct += (logits.argmax(dim=1) == target).sum()
    return (loss_sum / len(x)).item(), (correct / len(x)).item()


def train(
    network: nn.Module,
    data: PreparedData,
    spec: TrainingSpec,
    on_epoch: Callable[[EpochMetrics], None] = lambda metrics: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[EpochMetrics]:
    """Train in place on `data` (already on the network's device); one EpochMetrics per epoch."""
    device = data.x_train.device
    optimizer = make_optimizer(network, spec)
    shuffle = torch.Generator().manual_seed(spec.seed)
    history: list[EpochMetrics] = []
    count = len(data.x_train)
    for epoch in range(1, spec.epochs + 1):
        network.train()
        order = torch.randperm(count, generator=shuffle).to(device, non_blocking=True)
        # Running sums stay on the device: reading them every step would sync a GPU each step.
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for start in range(0, count, spec.batch_size):
            batch = order[start:start + spec.batch_size]
            # BN needs more than one value per feature in training: a trailing batch of 1 is dropped.
            if len(batch) < 2:
                break
            if should_stop():
                raise TrainingCancelled()
            inputs, targets = data.x_train[batch], data.y_train[batch]
            logits = network(inputs)
            loss = F.cross_entropy(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(batch)
            correct += (logits.detach().argmax(dim=1) == targets).sum()
            seen += len(batch)
        train_loss = (loss_sum / seen).item()
        if not math.isfinite(train_loss):
            raise TrainingDiverged(epoch, train_loss)
        val_loss, val_accuracy = evaluate(network, data.x_val, data.y_val)
        if not math.isfinite(val_loss):
            raise TrainingDiverged(epoch, val_loss)
        metrics = EpochMetrics(epoch, train_loss, (correct / seen).item(), val_loss, val_accuracy)
        history.append(metrics)
        on_epoch(metrics)
    return history

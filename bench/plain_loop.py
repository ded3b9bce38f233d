"""The baseline for training: a plain PyTorch loop over the same model, data and batch size as the job.

Same split and standardisation as the job's (bncore.data.builtin), the same Linear(bias=False) → BN →
ReLU blocks, SGD with momentum, a shuffled pass per epoch and a validation pass after it. No
checkpoints, no metrics store, no cancel checks: what a notebook would do.
"""

import time

import torch
import torch.nn.functional as F
from torch import nn

from bncore.data.builtin import PreparedData


def mlp(inputs: int, hidden: list[int], classes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(inputs, width, bias=False), nn.BatchNorm1d(width), nn.ReLU()]
        inputs = width
    return nn.Sequential(*layers, nn.Linear(inputs, classes))


def train_seconds(
    data: PreparedData,
    hidden: list[int],
    classes: int,
    epochs: int,
    batch_size: int,
    learning_rate: float = 0.1,
    momentum: float = 0.9,
    seed: int = 0,
) -> float:
    """Wall-clock seconds for `epochs` epochs of training, each followed by a validation pass."""
    torch.manual_seed(seed)
    model = mlp(data.x_train.shape[1], hidden, classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=momentum)
    shuffle = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(data.x_train), generator=shuffle)
        for first in range(0, len(order), batch_size):
            batch = order[first : first + batch_size]
            if len(batch) < 2:  # BN needs two values per feature
                break
            loss = F.cross_entropy(model(data.x_train[batch]), data.y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            F.cross_entropy(model(data.x_val), data.y_val).item()
    return time.perf_counter() - start

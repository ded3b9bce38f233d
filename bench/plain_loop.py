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


class BasicBlock(nn.Module):
    """He et al. 2016: conv → BN → ReLU → conv → BN, the shortcut added before the last ReLU."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet(depth: int, width: int, channels: int, classes: int) -> nn.Sequential:
    """The CIFAR ResNet of depth 6n+2, written here as a notebook would, independently of bncore's."""
    blocks_per_stage = (depth - 2) // 6
    layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    inputs = width
    for stage, outputs in enumerate((width, 2 * width, 4 * width)):
        for block in range(blocks_per_stage):
            layers.append(BasicBlock(inputs, outputs, 2 if stage > 0 and block == 0 else 1))
            inputs = outputs
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(inputs, classes))


def crop_and_flip(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Per-sample random crops of the zero-padded images, and random horizontal flips."""
    count, _, height, width = images.shape
    device = images.device
    offsets = torch.randint(0, 2 * padding + 1, (count, 2), generator=generator, device=device)
    rows = torch.arange(height, device=device) + offsets[:, :1]
    cols = torch.arange(width, device=device) + offsets[:, 1:]
    flip = torch.rand(count, generator=generator, device=device) < 0.5
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    padded = F.pad(images, (padding,) * 4)
    index = torch.arange(count, device=device)[:, None, None, None]
    planes = torch.arange(images.shape[1], device=device)[None, :, None, None]
    return padded[index, planes, rows[:, None, :, None], cols[:, None, None, :]]


def train_resnet_seconds(
    data: PreparedData,
    depth: int,
    width: int,
    classes: int,
    epochs: int,
    batch_size: int,
    padding: int = 4,
    learning_rate: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    bf16: bool = False,
    seed: int = 0,
) -> float:
    """Seconds for `epochs` epochs of a ResNet on `data` (on its device): SGD, a cosine schedule stepped per
    step, crops and flips per batch, and a validation pass per epoch. bf16: autocast and channels_last."""
    device = data.x_train.device
    torch.manual_seed(seed)
    model = resnet(depth, width, data.x_train.shape[1], classes).to(device)
    memory_format = torch.channels_last if bf16 and device.type == "cuda" else torch.contiguous_format
    model.to(memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=momentum, weight_decay=weight_decay)
    steps = epochs * (len(data.x_train) // batch_size + (1 if len(data.x_train) % batch_size >= 2 else 0))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    shuffle = torch.Generator().manual_seed(seed)
    augment = torch.Generator(device=device).manual_seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(data.x_train), generator=shuffle).to(device)
        for first in range(0, len(order), batch_size):
            batch = order[first : first + batch_size]
            if len(batch) < 2:
                break
            inputs = crop_and_flip(data.x_train[batch], padding, augment).contiguous(memory_format=memory_format)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(inputs).float(), data.y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            F.cross_entropy(model(data.x_val.contiguous(memory_format=memory_format)).float(), data.y_val).item()
    return time.perf_counter() - start

"""Built-in datasets: shipped with scikit-learn or generated, so nothing downloads at run time."""

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from sklearn import datasets as sk

from bncore.errors import InvalidField


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    input_shape: tuple[int, ...]
    num_classes: int
    num_samples: int
    image_shape: tuple[int, int, int] | None = None  # [C, H, W] when the features are an image's pixels


@dataclass(frozen=True)
class Dataset:
    info: DatasetInfo
    features: np.ndarray  # (num_samples, num_features) float32
    labels: np.ndarray  # (num_samples,) int64


def _two_moons() -> tuple[np.ndarray, np.ndarray]:
    return sk.make_moons(n_samples=1000, noise=0.2, random_state=0)


SHAPES = ("circle", "square", "triangle", "cross")


def generate_shapes32(count: int = 2000, side: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Coloured shapes on 3×32×32 images, a small CIFAR-like task: which of SHAPES is drawn.

    Position, size, shape colour and background colour are random, plus pixel noise; classes are balanced.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % len(SHAPES)
    rng.shuffle(labels)
    rows, cols = np.mgrid[0:side, 0:side].astype(np.float32)
    centre = rng.uniform(0.35 * side, 0.65 * side, size=(count, 2, 1, 1)).astype(np.float32)
    radius = rng.uniform(0.15 * side, 0.28 * side, size=(count, 1, 1)).astype(np.float32)
    dy, dx = rows - centre[:, 0], cols - centre[:, 1]
    masks = np.stack(
        [
            dy**2 + dx**2 <= radius**2,
            np.maximum(np.abs(dy), np.abs(dx)) <= radius * 0.85,
            (dy <= radius * 0.8) & (dy >= 2 * np.abs(dx) - radius),
            (np.minimum(np.abs(dy), np.abs(dx)) <= radius * 0.3) & (np.maximum(np.abs(dy), np.abs(dx)) <= radius),
        ]
    )[labels, np.arange(count)]
    foreground = rng.uniform(0.4, 1.0, size=(count, 3, 1, 1)).astype(np.float32)
    background = rng.uniform(0.0, 0.35, size=(count, 3, 1, 1)).astype(np.float32)
    noise = rng.standard_normal(size=(count, 3, side, side), dtype=np.float32) * np.float32(0.05)
    return np.where(masks[:, None], foreground, background) + noise, labels


def _sklearn(loader: Callable[..., tuple[np.ndarray, np.ndarray]]) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    return lambda: loader(return_X_y=True)


_SOURCES: dict[str, tuple[str, Callable[[], tuple[np.ndarray, np.ndarray]]]] = {
    "digits": ("8x8 images of handwritten digits, 64 grey levels as features (scikit-learn)", _sklearn(sk.load_digits)),
    "iris": ("Iris flowers: 4 measurements, 3 species (scikit-learn)", _sklearn(sk.load_iris)),
    "wine": ("Wines: 13 chemical measurements, 3 cultivars (scikit-learn)", _sklearn(sk.load_wine)),
    "breast_cancer": ("Breast cancer biopsies: 30 features, benign or malignant (scikit-learn)", _sklearn(sk.load_breast_cancer)),
    "two_moons": ("Two interleaving half circles in 2-D with noise 0.2, 1000 points (generated, seed 0)", _two_moons),
    "shapes32": (
        "3x32x32 images of a circle, square, triangle or cross in random colours, 2000 images (generated, seed 0)",
        generate_shapes32,
    ),
}
IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {"digits": (1, 8, 8)}


@cache
def load_dataset(name: str) -> Dataset:
    """The whole dataset by name; raises InvalidField('dataset.name') for an unknown one."""
    if name not in _SOURCES:
        raise InvalidField("dataset.name", f"unknown dataset '{name}'; expected one of {sorted(_SOURCES)}")
    description, source = _SOURCES[name]
    samples, labels = source()
    # Images come as (N, C, H, W): their shape is the dataset's input shape, their pixels its features.
    features = np.ascontiguousarray(samples.reshape(len(samples), -1), dtype=np.float32)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    info = DatasetInfo(
        name=name,
        description=description,
        input_shape=tuple(samples.shape[1:]),
        num_classes=int(labels.max()) + 1,
        num_samples=len(labels),
        image_shape=IMAGE_SHAPES.get(name),
    )
    return Dataset(info=info, features=features, labels=labels)


def list_datasets() -> list[DatasetInfo]:
    return [load_dataset(name).info for name in _SOURCES]


@dataclass(frozen=True)
class PreparedData:
    """A train/validation split as tensors, standardised with the training split's statistics."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    input_mean: torch.Tensor  # shaped like one sample
    input_std: torch.Tensor

    def to(self, device: torch.device) -> "PreparedData":
        return PreparedData(
            *(
                t.to(device, non_blocking=True)
                for t in (self.x_train, self.y_train, self.x_val, self.y_val, self.input_mean, self.input_std)
            )
        )


def split_indices(count: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) sample indices of a seeded permutation: the same split for the same seed."""
    order = np.random.default_rng(seed).permutation(count)
    num_val = max(1, round(count * validation_fraction))
    return order[num_val:], order[:num_val]


def raw_samples(dataset: Dataset, input_shape: tuple[int, ...], indices: np.ndarray | None = None) -> torch.Tensor:
    """Unstandardised samples shaped (N, *input_shape); all of them when `indices` is None."""
    x = torch.from_numpy(dataset.features).reshape(dataset.info.num_samples, *input_shape)
    return x if indices is None else x[indices]


def prepare_data(dataset: Dataset, input_shape: tuple[int, ...], validation_fraction: float, seed: int) -> PreparedData:
    """Split with a seeded permutation, reshape samples to `input_shape`, standardise per feature."""
    train_idx, val_idx = split_indices(dataset.info.num_samples, validation_fraction, seed)
    x = raw_samples(dataset, input_shape)
    y = torch.from_numpy(dataset.labels)
    x_train = x[train_idx]
    mean = x_train.mean(dim=0)
    std = x_train.std(dim=0, unbiased=False)
    # Constant features (the blank border pixels of digits) would divide by zero.
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return PreparedData(
        x_train=(x_train - mean) / std,
        y_train=y[train_idx],
        x_val=(x[val_idx] - mean) / std,
        y_val=y[val_idx],
        input_mean=mean,
        input_std=std,
    )

"""CIFAR-sized synthetic images, 3×32×32 in 10 classes, made on the spot: nothing downloads.

Each class is a coloured stripe pattern of its own frequency and orientation, at a random phase
and under noise: learnable, so a short run shows training working, and as costly per sample as
CIFAR-10 for a network, which is all the benchmark needs.
"""

import numpy as np

from bncore.data.builtin import Dataset, DatasetInfo

SHAPE = (3, 32, 32)
CLASSES = 10


def synthetic_images(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images shaped (count, 3, 32, 32) and int64 labels in [0, 10)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, count)
    rows, cols = np.mgrid[0 : SHAPE[1], 0 : SHAPE[2]]
    frequency = (1 + labels % 5)[:, None, None]
    along = np.where((labels // 5 == 0)[:, None, None], cols, rows)
    phase = rng.uniform(0, 2 * np.pi, count)[:, None, None]
    pattern = np.sin(2 * np.pi * frequency * along / SHAPE[2] + phase)
    colours = np.random.default_rng(12345).uniform(0.3, 1.0, (CLASSES, 3))[labels]
    images = 128 + 90 * pattern[:, None] * colours[:, :, None, None] + rng.normal(0, 25, (count, *SHAPE))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def image_dataset(count: int, seed: int = 0) -> Dataset:
    """The images as the training code takes a dataset: features flattened, float32."""
    images, labels = synthetic_images(count, seed)
    info = DatasetInfo("synthetic_images", "synthetic 3×32×32 stripes, 10 classes", SHAPE, CLASSES, count)
    return Dataset(info, images.reshape(count, -1).astype(np.float32), labels)

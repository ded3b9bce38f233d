"""Random crops and horizontal flips of a batch of [N, C, H, W] images, on the batch's device.

One gather does both: each sample's rows and columns are read from its zero-padded image at a random
offset, its columns in reverse when it is flipped. The draws come from a generator of their own on
the batch's device, seeded from the job's seed and stored in checkpoints, so the same seed gives the
same model and a resumed job draws what an uninterrupted one would have.
"""

import torch
import torch.nn.functional as F

from bncore.specs import AugmentationSpec

SEED_OFFSET = 0x5EED  # its stream differs from the shuffling generator's, which has the job's seed itself


class BatchAugmenter:
    def __init__(self, spec: AugmentationSpec, seed: int, device: torch.device) -> None:
        self.padding = spec.random_crop_padding
        self.flip = spec.horizontal_flip
        self.generator = torch.Generator(device=device).manual_seed(seed + SEED_OFFSET)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if not (self.padding or self.flip):
            return images
        count, channels, height, width = images.shape
        device = images.device
        rows = torch.arange(height, device=device).expand(count, height)
        cols = torch.arange(width, device=device).expand(count, width)
        if self.padding:
            offsets = torch.randint(0, 2 * self.padding + 1, (count, 2), generator=self.generator, device=device)
            images = F.pad(images, (self.padding,) * 4)
            rows = rows + offsets[:, :1]
            cols = cols + offsets[:, 1:]
        if self.flip:
            flipped = torch.rand(count, generator=self.generator, device=device) < 0.5
            cols = torch.where(flipped[:, None], cols.flip(1), cols)
        samples = torch.arange(count, device=device)[:, None, None, None]
        planes = torch.arange(channels, device=device)[None, :, None, None]
        return images[samples, planes, rows[:, None, :, None], cols[:, None, None, :]]

import contextlib
from collections.abc import Iterator

import torch


def limit_cpu_threads(threads: int | None) -> None:
    """Several processes each using every core slow each other down many times over."""
    if threads is not None:
        torch.set_num_threads(threads)


def training_device() -> torch.device:
    """CUDA when this process sees a GPU, else the CPU."""
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """TF32 off within: by default CUDA's fp32 convolutions round their inputs to 10 mantissa bits (TF32),
    so their results differ from the CPU's by far more than fp32's rounding."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved

import torch


def limit_cpu_threads(threads: int | None) -> None:
    """Several processes each using every core slow each other down many times over."""
    if threads is not None:
        torch.set_num_threads(threads)


def training_device() -> torch.device:
    """CUDA when this process sees a GPU, else the CPU."""
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")

import torch


def training_device() -> torch.device:
    """CUDA when this process sees a GPU, else the CPU."""
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")

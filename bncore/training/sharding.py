"""One process's part of a data-parallel job: its share of every global batch, and the sums it adds to the others'."""

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class BatchShard:
    """Rank `rank` of `world_size` takes a contiguous share of each global batch, so the processes together see,
    in the same order, the batches one process would."""

    rank: int
    world_size: int

    def share(self, batch_length: int) -> slice:
        """Shares differ by at most one sample when a (trailing) batch does not divide."""
        base, extra = divmod(batch_length, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over every process, on every process."""
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def wrap(self, network: nn.Module) -> nn.Module:
        """DistributedDataParallel averages gradients; its buffers (the BN statistics) are rank 0's on every process."""
        device_ids = [network_device(network).index] if network_device(network).type == "cuda" else None
        return DistributedDataParallel(network, device_ids=device_ids)


def network_device(network: nn.Module) -> torch.device:
    return next(network.parameters()).device

"""How steady this host runs a fixed piece of work, at the time scale of one predict request.

On a shared virtual machine the CPU's speed can flip by a third or more for tenths of a second at a
time, whatever runs. A latency tail measured here is partly the host's: row 11's p99 note gives this
ratio, measured in the same run, beside the service's.
"""

import time

import torch

from bench import http_load

PIECE = torch.ones(96, 96)
MATMULS_PER_PIECE = 16  # ~0.2 ms on this repository's machine, about a one-row predict request in process


def p99_over_p50(seconds: float) -> float:
    """p99 over p50 of the time of one piece (float32 matmuls on one torch thread), timed back to back."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = []
        deadline = time.perf_counter() + seconds
        while (started := time.perf_counter()) < deadline:
            for _ in range(MATMULS_PER_PIECE):
                PIECE @ PIECE
            times.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    latency = http_load.summarise(times)
    return latency.p99_ms / latency.p50_ms

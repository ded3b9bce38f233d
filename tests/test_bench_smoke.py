"""`python -m bench --quick` runs end to end and prints its table, and `python -m bench.gpu` without CUDA says so; the
numbers themselves are not tested."""

import subprocess
import sys

import pytest
import torch

from bench import gpu, resnet
from tests.support.processes import ROOT


def test_the_quick_benchmark_prints_a_row_for_each_measurement() -> None:
    run = subprocess.run([sys.executable, "-m", "bench", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    lines = run.stdout.splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["benchmark", "measured", "baseline", "ratio", "target", "result"]
    rows = [line for line in lines[2:] if line.startswith("| ")]
    expected = [str(row) for row in range(1, 13) if resnet.available() or row not in (8, 9)]  # 8, 9: ResNet
    assert sorted({row.strip("| ").split(".")[0] for row in rows}, key=int) == expected
    assert all(row.split("|")[6].strip() in {"pass", "MISS", "—"} for row in rows)
    # Row 12: the wide MLP and (with ResNet) ResNet-20, each on 2 data-parallel processes against 1.
    data_parallel = [row.split("|")[1].strip() for row in rows if row.startswith("| 12.")]
    networks = ["MLP 784-1024-1024-10"] + ([f"ResNet-{resnet.DEPTH}"] if resnet.available() else [])
    assert [next(network for network in networks if network in name) for name in data_parallel] == networks, data_parallel
    assert all(name.endswith("2 processes vs 1") for name in data_parallel), data_parallel


@pytest.mark.skipif(torch.cuda.is_available(), reason="what `make gpu-check` does on a machine without CUDA")
def test_the_gpu_benchmark_without_cuda_says_so_and_measures_nothing() -> None:
    run = subprocess.run([sys.executable, "-m", "bench.gpu"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    assert (run.stdout, run.stderr) == ("", "no CUDA device visible: nothing to measure\n")
    assert gpu.data_parallel_rows() == []  # its data-parallel rows too, called on their own

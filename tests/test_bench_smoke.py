"""`python -m bench --quick` runs end to end and prints its table; the numbers themselves are not tested."""

import os
import subprocess
import sys

import pytest

from bench import resnet
from tests.support.processes import ROOT

pytestmark = pytest.mark.embedded_only


@pytest.mark.skipif(
    os.environ.get("BN_TEST_MODE") == "distributed",
    reason="the benchmark starts its own processes whatever the mode: once per CI run is enough",
)
def test_the_quick_benchmark_prints_a_row_for_each_measurement() -> None:
    run = subprocess.run([sys.executable, "-m", "bench", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    lines = run.stdout.splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["benchmark", "measured", "baseline", "ratio", "target", "result"]
    rows = [line for line in lines[2:] if line.startswith("| ")]
    expected = ["1", "2", "3", "4", "5", "6", "7"] + (["8", "9"] if resnet.available() else []) + ["10", "11"]  # 8, 9: ResNet
    assert sorted({row.strip("| ").split(".")[0] for row in rows}, key=int) == expected
    assert all(row.split("|")[6].strip() in {"pass", "MISS", "—"} for row in rows)

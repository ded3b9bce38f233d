"""Prometheus metrics summed over several API processes: prometheus_client's multiprocess mode.

Each process writes its counters and histograms to memory-mapped files in one folder; a scrape of
any process reads them all. The client library chooses its mode when it is first imported, so the
folder is named (PROMETHEUS_MULTIPROC_DIR) before that, in the parent, and the processes inherit it.
"""

import os
import shutil
from pathlib import Path

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def share_metrics_between_processes(data_dir: Path) -> Path:
    """A fresh metrics folder in DATA_DIR, named for every process started from now on."""
    folder = (data_dir / "prometheus").resolve()
    shutil.rmtree(folder, ignore_errors=True)  # a previous run's counts are not this run's
    folder.mkdir(parents=True)
    os.environ[MULTIPROCESS_VARIABLE] = str(folder)
    return folder


def metrics_shared() -> bool:
    return bool(os.environ.get(MULTIPROCESS_VARIABLE))

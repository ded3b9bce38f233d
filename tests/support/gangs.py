"""A data-parallel job's gang from outside: its processes, and killing one of them."""

import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bncore.training.data_parallel import GANG_FOLDER_PREFIX
from tests.support.jobs import job_request, submit, wait_for, wait_for_epochs


def rank_process(job_id: str, rank: int) -> int:
    """The pid of the gang's process `rank`, as it left it in the gang's work folder."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for pid_file in Path(tempfile.gettempdir()).glob(f"{GANG_FOLDER_PREFIX}{job_id}-*/rank-{rank}.pid"):
            return int(pid_file.read_text())
        time.sleep(0.05)
    raise AssertionError(f"no process of rank {rank} for job {job_id}")


def kill_rank_1_and_see_the_job_resume(client: httpx.Client, resources: dict[str, int]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Kill the gang's process of rank 1 after 3 epochs: the attempt fails for the whole gang and the job resumes
    from its checkpoint and ends with every epoch. The job when killed, and when finished."""
    body = job_request(model={"hidden_sizes": [256, 256]}, training={"epochs": 12, "seed": 1}, resources=resources)
    job = submit(client, body)
    running = wait_for_epochs(client, job["id"], 3)
    os.kill(rank_process(job["id"], rank=1), signal.SIGKILL)
    killed_at = len(running["metrics"])

    finished = wait_for(client, job["id"], timeout=240)
    assert finished["status"] == "succeeded", finished["error"]
    assert finished["attempts"] == 2
    assert finished["resumed_from_epoch"] is not None and finished["resumed_from_epoch"] >= killed_at
    assert [m["epoch"] for m in finished["metrics"]] == list(range(1, 13))
    return running, finished

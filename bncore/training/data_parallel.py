"""Data-parallel training on several processes of one machine, launched by PyTorch's elastic launcher.

The caller (one worker's job) prepares the data and stays in charge: it writes the data and any
checkpoint to resume from into a work folder, launches `processes` ranks (gloo on CPU, NCCL and one
GPU each on CUDA) that meet at a c10d rendezvous, and pumps what rank 0 reports (each epoch's metrics,
its checkpoints) to its own callbacks while they train. Ranks are spawned, so they get only plain
arguments: the spec as JSON, the folder, and two proxies of a multiprocessing manager (rank 0's
messages, and the caller's stop request). One rank failing fails the gang: the elastic agent, with
no restarts, stops the others and raises `ChildFailedError`, so a lost process never leaves a hang.
"""

import json
import os
import queue
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from bncore.bn.global_batchnorm import GlobalBatchNorm
from bncore.data.builtin import PreparedData
from bncore.specs import JobSpec
from bncore.training.checkpoints import Checkpoint
from bncore.training.epoch_metrics import EpochMetrics
from bncore.training.loop import TrainingDiverged, TrainingInterrupted, TrainingResult, train
from bncore.training.networks import build_network
from bncore.training.sharding import BatchShard

DATA, RESUME, RESULT = "data.safetensors", "resume.safetensors", "result.safetensors"
STOP_POLL_SECONDS = 0.2  # how often a rank looks for the caller's stop request
PUMP_SECONDS = 0.1
GANG_FOLDER_PREFIX = "bnjobs-gang-"  # + the run id: a gang's work folder, where each rank leaves `rank-N.pid`


class GangFailed(Exception):
    """A process of the gang failed and the attempt with it; `lost`: it was killed (a signal), not an error of its own."""

    def __init__(self, message: str, lost: bool) -> None:
        super().__init__(message)
        self.lost = lost


@dataclass(frozen=True)
class Gang:
    processes: int
    run_id: str  # the rendezvous's id: the job's
    checkpoint_seconds: float  # rank 0's least time between two checkpoints; 0: after every epoch


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _save(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    save_file({name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}, str(path), metadata)


def _load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as stored:
        metadata = stored.metadata() or {}
    return load_file(str(path)), metadata


def sync_batchnorm(network: nn.Module, device: torch.device) -> nn.Module:
    """Every BN layer normalising with the global batch: nn.SyncBatchNorm on CUDA, GlobalBatchNorm (gloo) on CPU."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(network)
    return GlobalBatchNorm.convert(network)


def train_data_parallel(
    spec: JobSpec,
    data: PreparedData,
    gang: Gang,
    on_epoch: Callable[[EpochMetrics, Checkpoint | None], None] = lambda metrics, checkpoint: None,
    interrupt: Callable[[], None] = lambda: None,
    resume: Checkpoint | None = None,
) -> tuple[dict[str, torch.Tensor], TrainingResult]:
    """Train on `gang.processes` processes; rank 0's network state (BN statistics included) and result.

    `on_epoch` gets each epoch's metrics, with a checkpoint when one was due; `interrupt` is called
    while they train and stops the gang by raising. A failed gang raises GangFailed, or TrainingDiverged.
    """
    if torch.cuda.is_available() and gang.processes > torch.cuda.device_count():
        raise GangFailed(
            f"the job asks for {gang.processes} processes, one per GPU, and this worker has {torch.cuda.device_count()}",
            lost=False,
        )
    with (
        tempfile.TemporaryDirectory(prefix=f"{GANG_FOLDER_PREFIX}{gang.run_id}-") as folder,
        get_context("spawn").Manager() as manager,
    ):
        workdir = Path(folder)
        _save(workdir / DATA, _data_tensors(data), {})
        if resume is not None:
            _save(workdir / RESUME, resume.tensors, resume.metadata)
        messages, stop = manager.Queue(), manager.Event()
        config = LaunchConfig(
            min_nodes=1,
            max_nodes=1,
            nproc_per_node=gang.processes,
            rdzv_backend="c10d",
            rdzv_endpoint=f"127.0.0.1:{_free_port()}",
            run_id=gang.run_id,
            max_restarts=0,
        )
        outcome: dict[str, BaseException] = {}

        def launch() -> None:
            try:
                elastic_launch(config, run_rank)(spec.model_dump_json(), str(workdir), gang.checkpoint_seconds, messages, stop)
            except BaseException as error:  # handed to the caller's thread
                outcome["error"] = error

        # The launcher runs in a thread of its own: in the main thread it would take over SIGTERM and SIGINT.
        launcher = threading.Thread(target=launch, name=f"gang-{gang.run_id}", daemon=True)
        launcher.start()
        diverged: TrainingDiverged | None = None
        try:
            while launcher.is_alive() or not messages.empty():
                diverged = _pump(messages, on_epoch) or diverged
                interrupt()
        except BaseException:
            stop.set()
            launcher.join()
            raise
        if diverged is not None:
            raise diverged
        if "error" in outcome:
            error = outcome["error"]
            raise _gang_failed(error) from error
        tensors, metadata = _load(workdir / RESULT)
    header = json.loads(metadata["result"])
    history = [EpochMetrics(**metrics) for metrics in header["history"]]
    return tensors, TrainingResult(history, header["best_epoch"])


def _pump(messages: Any, on_epoch: Callable[[EpochMetrics, Checkpoint | None], None]) -> TrainingDiverged | None:
    try:
        kind, *body = messages.get(timeout=PUMP_SECONDS)
    except queue.Empty:
        return None
    if kind == "diverged":
        epoch, step, loss = body
        return TrainingDiverged(epoch, step, loss)
    metrics, checkpoint_path = body
    checkpoint = None
    if checkpoint_path is not None:
        checkpoint = Checkpoint.from_stored(*_load(Path(checkpoint_path)))
        Path(checkpoint_path).unlink()
    on_epoch(EpochMetrics(**metrics), checkpoint)
    return None


def _gang_failed(error: BaseException) -> GangFailed:
    if isinstance(error, ChildFailedError):
        rank, failure = error.get_first_failure()
        if failure.exitcode < 0:
            return GangFailed(f"process {rank} of the gang was killed ({failure.signal_name()}); the attempt with it", lost=True)
        return GangFailed(f"process {rank} of the gang failed: {failure.message}", lost=False)
    return GangFailed(f"the gang could not run: {type(error).__name__}: {error}", lost=False)


def _data_tensors(data: PreparedData) -> dict[str, torch.Tensor]:
    names = ("x_train", "y_train", "x_val", "y_val", "input_mean", "input_std")
    return {name: getattr(data, name) for name in names}


def run_rank(spec_json: str, folder: str, checkpoint_seconds: float, messages: Any, stop: Any) -> None:
    """One process of the gang: the same network from the same seed, its share of each batch of the same order.

    Rank 0 reports each epoch (with a checkpoint when one is due) and writes the trained state.
    """
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    workdir = Path(folder)
    (workdir / f"rank-{rank}.pid").write_text(str(os.getpid()))  # which process is which, for an operator
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        spec = JobSpec.model_validate_json(spec_json)
        tensors, _ = _load(workdir / DATA)
        data = PreparedData(**tensors).to(device)
        input_shape = tuple(spec.model.input_shape or data.x_train.shape[1:])
        torch.manual_seed(spec.training.seed)
        network = build_network(spec.model, input_shape, for_training=True).to(device)
        if spec.model.bn_sync != "local":
            network = sync_batchnorm(network, device)
        resume = Checkpoint.from_stored(*_load(workdir / RESUME)) if (workdir / RESUME).exists() else None
        last_checkpoint, last_poll = time.monotonic(), time.monotonic()

        def on_epoch(metrics: EpochMetrics, capture: Callable[[], Checkpoint]) -> None:
            nonlocal last_checkpoint
            if rank != 0:
                return
            path = None
            if metrics.epoch < spec.training.epochs and time.monotonic() - last_checkpoint >= checkpoint_seconds:
                saved = capture()
                path = str(workdir / f"checkpoint-{metrics.epoch}.safetensors")
                _save(Path(path), saved.tensors, saved.metadata)
                last_checkpoint = time.monotonic()
            messages.put(("epoch", metrics.__dict__, path))

        def interrupt() -> None:
            nonlocal last_poll
            if time.monotonic() - last_poll >= STOP_POLL_SECONDS:
                last_poll = time.monotonic()
                if stop.is_set():
                    raise TrainingInterrupted()

        try:
            result = train(network, data, spec.training, on_epoch, interrupt, resume, BatchShard(rank, world_size))
        except TrainingDiverged as error:
            if rank == 0:
                messages.put(("diverged", error.epoch, error.step, error.loss))
            raise
        if rank == 0:
            header = {"history": [metrics.__dict__ for metrics in result.history], "best_epoch": result.best_epoch}
            _save(workdir / RESULT, network.state_dict(), {"result": json.dumps(header)})
    finally:
        dist.destroy_process_group()

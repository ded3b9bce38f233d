"""Data-parallel training on several processes of one machine, launched by PyTorch's elastic launcher.

The caller (one worker's job) prepares the data and stays in charge: it writes the data and any
checkpoint to resume from into a work folder, launches `processes` ranks (gloo on CPU, NCCL and one
GPU each on CUDA) that meet at a c10d rendezvous, and pumps what rank 0 reports (each epoch's metrics,
its checkpoints) to its own callbacks while they train. Ranks are spawned, so they get only plain
arguments: the spec as JSON, the folder, and two proxies of a multiprocessing manager (rank 0's
messages, and the caller's stop request). One rank failing fails the gang: the elastic agent, with
no restarts, stops the others and raises `ChildFailedError`, so a lost process never leaves a hang.

A gang may span several workers (`Gang.members`): each member's launcher joins the same c10d
rendezvous, whose store member 0 hosts at `Gang.endpoint`, with `members` nodes of `processes`
processes each. Members that do not all join within `Gang.join_timeout_seconds` make the launcher
raise, here GangIncomplete. The rendezvous ranks nodes by host and pid, so each process takes its
job rank from its member index instead: member 0 always holds rank 0, and rank 0 reports to it.
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
from multiprocessing.managers import SyncManager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.elastic.rendezvous.api import RendezvousTimeoutError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from bncore.bn.global_batchnorm import GlobalBatchNorm
from bncore.data.builtin import PreparedData
from bncore.parent_process import watch_parent
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


class GangIncomplete(Exception):
    """Not every member of a gang spanning several workers joined its rendezvous in time."""


@dataclass(frozen=True)
class Gang:
    processes: int  # on each member
    run_id: str  # the rendezvous's id: unique per attempt at a job
    checkpoint_seconds: float  # rank 0's least time between two checkpoints; 0: after every epoch
    members: int = 1  # workers the gang spans, each launching `processes` processes
    member: int = 0  # this one's index; member 0 hosts the rendezvous and holds rank 0
    endpoint: str | None = None  # host:port of member 0's rendezvous store; None: a free local port
    join_timeout_seconds: int = 60  # for every member to join (several members only)
    host: str = "127.0.0.1"  # this member's address, reachable by the other members

    def launch_config(self) -> LaunchConfig:
        """The elastic launcher's configuration: one node of a fixed-size c10d rendezvous, never restarted."""
        rendezvous: dict[str, object] = {}
        if self.members > 1:
            # The host is named rather than guessed from the endpoint: on one machine every member would match it.
            rendezvous = {"is_host": self.member == 0, "join_timeout": self.join_timeout_seconds}
        return LaunchConfig(
            min_nodes=self.members,
            max_nodes=self.members,
            nproc_per_node=self.processes,
            rdzv_backend="c10d",
            rdzv_endpoint=self.endpoint or f"127.0.0.1:{free_port()}",
            rdzv_configs=rendezvous,
            run_id=self.run_id,
            max_restarts=0,
            local_addr=self.host if self.members > 1 else None,
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))  # free on every interface: the other members may reach this one from elsewhere
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
    """Train on the gang as its member 0; rank 0's network state (BN statistics included) and result.

    `on_epoch` gets each epoch's metrics, with a checkpoint when one was due; `interrupt` is called
    while they train and stops the gang by raising. A failed gang raises GangFailed, GangIncomplete
    or TrainingDiverged.
    """
    assert gang.member == 0, "rank 0 trains on member 0: the other members join"
    with tempfile.TemporaryDirectory(prefix=f"{GANG_FOLDER_PREFIX}{gang.run_id}-") as folder:
        workdir = Path(folder)
        _launch(spec, data, gang, workdir, on_epoch, interrupt, resume)
        tensors, metadata = _load(workdir / RESULT)
    header = json.loads(metadata["result"])
    history = [EpochMetrics(**metrics) for metrics in header["history"]]
    return tensors, TrainingResult(history, header["best_epoch"])


def join_data_parallel(
    spec: JobSpec,
    data: PreparedData,
    gang: Gang,
    interrupt: Callable[[], None] = lambda: None,
    resume: Checkpoint | None = None,
) -> None:
    """Train on the gang as one of its other members, until the gang ends; member 0 gets the model.

    Raises as `train_data_parallel` does; GangIncomplete when member 0 is gone before all joined.
    """
    assert gang.member > 0, "member 0 trains with train_data_parallel"
    with tempfile.TemporaryDirectory(prefix=f"{GANG_FOLDER_PREFIX}{gang.run_id}-member-{gang.member}-") as folder:
        _launch(spec, data, gang, Path(folder), lambda metrics, checkpoint: None, interrupt, resume)


def _launch(
    spec: JobSpec,
    data: PreparedData,
    gang: Gang,
    workdir: Path,
    on_epoch: Callable[[EpochMetrics, Checkpoint | None], None],
    interrupt: Callable[[], None],
    resume: Checkpoint | None,
) -> None:
    """This member's processes, from the rendezvous to the end of training, with rank 0's reports pumped."""
    if torch.cuda.is_available() and gang.processes > torch.cuda.device_count():
        raise GangFailed(
            f"the job asks for {gang.processes} processes, one per GPU, and this worker has {torch.cuda.device_count()}",
            lost=False,
        )
    with gang_manager() as manager:
        _save(workdir / DATA, _data_tensors(data), {})
        if resume is not None:
            _save(workdir / RESUME, resume.tensors, resume.metadata)
        messages, stop = manager.Queue(), manager.Event()
        config = gang.launch_config()
        outcome: dict[str, BaseException] = {}
        first_rank = gang.member * gang.processes
        # This worker's CPU threads, shared by its processes: each spawned one would otherwise take every core
        # (torchrun sets one thread each; an even share keeps the worker's budget).
        cpu_threads = max(1, torch.get_num_threads() // gang.processes)

        def launch() -> None:
            try:
                elastic_launch(config, run_rank)(
                    spec.model_dump_json(), str(workdir), gang.checkpoint_seconds, messages, stop, first_rank, cpu_threads
                )
            except BaseException as error:  # handed to the caller's thread
                outcome["error"] = error

        # The launcher runs in a thread of its own: in the main thread it would take over SIGTERM and SIGINT.
        launcher = threading.Thread(target=launch, name=f"gang-{gang.run_id}-{gang.member}", daemon=True)
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
            if isinstance(error, RendezvousTimeoutError):
                raise GangIncomplete(
                    f"not all {gang.members} workers joined the gang within {gang.join_timeout_seconds} s"
                ) from error
            raise _gang_failed(error) from error


def gang_manager() -> SyncManager:
    """The process that holds the queue and the event a gang's ranks share with this worker, started. It ends with
    the worker, also one killed mid-gang, which has no time to shut it down."""
    manager = SyncManager(ctx=get_context("spawn"))
    manager.start(initializer=watch_parent, initargs=(os.getpid(),))
    return manager


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


def run_rank(
    spec_json: str, folder: str, checkpoint_seconds: float, messages: Any, stop: Any, first_rank: int = 0, cpu_threads: int = 1
) -> None:
    """One process of the gang: the same network from the same seed, its share of each batch of the same order.

    Its rank is `first_rank` (its member's) + its local rank, not the launcher's RANK: the rendezvous
    orders members by host and pid, and rank 0 must be on member 0. Rank 0 reports each epoch (with a
    checkpoint when one is due) and writes the trained state.
    """
    rank, world_size = first_rank + int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(cpu_threads)
    workdir = Path(folder)
    (workdir / f"rank-{rank}.pid").write_text(str(os.getpid()))  # which process is which, for an operator
    # The launcher's own store serves every process as a client, so any assignment of ranks is safe here.
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
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
        _agree_on(resume)
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


def _agree_on(resume: Checkpoint | None) -> None:
    """Every process goes on from the same epoch: the members of a gang across workers each read the checkpoint."""
    epochs: list[int | None] = [None] * dist.get_world_size()
    dist.all_gather_object(epochs, resume.epoch if resume is not None else 0)
    if len(set(epochs)) > 1:
        raise RuntimeError(f"the processes of the gang would resume from different epochs: {epochs}")

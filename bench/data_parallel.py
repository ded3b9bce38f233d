"""Row 12 (and `make gpu-check`): a data-parallel job's training samples/s on several processes against one.

Both sides run the job's own code. One process trains as a job with `resources.processes: 1` does,
in the worker's process (bncore.training.loop.train, as bncore.jobs.execution.train_model calls it).
Several train as a job with more processes does: a gang launched by
bncore.training.data_parallel.train_data_parallel (PyTorch's elastic launcher, DistributedDataParallel,
gloo and the CPU's global BN, or NCCL and SyncBatchNorm with one GPU per process), BN over the global
batch (`model.bn_sync` left to its default). The job's batch is the global batch: each process takes
its share. Both count the samples per second of the epochs as the job reports them (a training pass
and a validation pass each) after a first epoch left out as warm-up; the gang's start and end around
its epochs (spawning the processes, importing torch, the rendezvous) is not counted and is given in the note.
"""

import os
import time
import uuid
from dataclasses import dataclass

import torch

from bench import efficiency, resnet
from bench.report import Row, ratio_row
from bench.synthetic_images import SHAPE, image_dataset
from bncore.data.builtin import PreparedData, prepare_data
from bncore.specs import JobSpec
from bncore.training.data_parallel import Gang, train_data_parallel
from bncore.training.epoch_metrics import EpochMetrics
from bncore.training.loop import train
from bncore.training.networks import build_network

NO_CHECKPOINTS = float("inf")  # a bench run is not resumed: rank 0 never pauses to write one


@dataclass(frozen=True)
class Case:
    """One network to train: `name` for the row, the job's spec (its `resources.processes` is set here), its data."""

    name: str
    spec: JobSpec
    data: PreparedData


def job_spec(model: dict, input_shape: tuple[int, ...], training: dict) -> JobSpec:
    model = {**model, "input_shape": list(input_shape)}
    return JobSpec.model_validate({"model": model, "dataset": {"name": "digits"}, "training": {"seed": 0, **training}})


def samples_per_second(history: list[EpochMetrics], data: PreparedData) -> float:
    """Over the epochs after the first, as the job's metrics report their seconds."""
    timed = history[1:]
    return len(timed) * len(data.x_train) / sum(epoch.seconds for epoch in timed)


def one_process(case: Case, device: torch.device) -> float:
    data = case.data.to(device)
    torch.manual_seed(case.spec.training.seed)
    network = build_network(case.spec.model, tuple(data.x_train.shape[1:]), for_training=True).to(device)
    return samples_per_second(train(network, data, case.spec.training).history, data)


def gang(case: Case, processes: int) -> tuple[float, float]:
    """Samples/s of `processes` processes, and the seconds the gang spent outside its epochs."""
    spec = case.spec.model_copy(update={"resources": case.spec.resources.model_copy(update={"processes": processes})})
    started = time.perf_counter()
    _, result = train_data_parallel(spec, case.data, Gang(processes, f"bench-{uuid.uuid4().hex[:8]}", NO_CHECKPOINTS))
    outside = time.perf_counter() - started - sum(epoch.seconds for epoch in result.history)
    return samples_per_second(result.history, case.data), outside


def measure(cases: list[Case], processes: int, device: torch.device, prefix: str = "12. ") -> list[Row]:
    """A row per case: `processes` processes (a gang) against one (in this process, on `device`)."""
    rows = []
    for case in cases:
        baseline = one_process(case, device)
        rate, outside = gang(case, processes)
        training = case.spec.training
        rows.append(
            ratio_row(
                f"{prefix}data-parallel training, {case.name}, batch {training.batch_size}: {_processes(processes)} vs 1",
                rate,
                baseline,
                "samples/s",
                None,
                higher_is_better=True,
                note=f"{len(case.data.x_train)} samples × {training.epochs - 1} timed epoch(s) after one of warm-up, "
                f"{len(case.data.x_val)} validation samples; the gang's start and end took {outside:.1f} s more, "
                f"not counted; {_threads(device)}",
            )
        )
    return rows


def _processes(count: int) -> str:
    return f"{count} processes" if count > 1 else "1 process launched as a gang"


def _threads(device: torch.device) -> str:
    if device.type == "cuda":
        return f"one GPU per process ({torch.cuda.get_device_name(device)}), NCCL"
    return f"gloo, on {os.cpu_count()} CPU cores; the {torch.get_num_threads()} torch threads shared by the processes"


def wide_mlp(samples: int, epochs: int, batch_size: int = efficiency.BATCH) -> Case:
    """Row 7's MLP on its synthetic data, by default in batches of its batch size."""
    torch.manual_seed(0)
    spec = job_spec(efficiency.WIDE_MLP, (efficiency.WIDTHS[0],), {"epochs": epochs, "batch_size": batch_size})
    return Case(f"MLP {'-'.join(map(str, efficiency.WIDTHS))}", spec, efficiency.synthetic_data(samples))


def resnet_20(samples: int, epochs: int, batch_size: int = resnet.BATCH_SIZE, validation: int = 32) -> Case:
    """Row 8's ResNet-20 and recipe (by default its batch size) on `samples` synthetic training images
    and `validation` more."""
    total = samples + validation
    data = prepare_data(image_dataset(total), SHAPE, validation / total, 0)
    spec = job_spec(resnet.RESNET_20, SHAPE, {**resnet.RECIPE, "epochs": epochs, "batch_size": batch_size})
    return Case(f"ResNet-{resnet.DEPTH} on 3×32×32, cosine + crops + flips", spec, data)

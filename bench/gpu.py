"""`python -m bench.gpu` (`make gpu-check` runs it): training and prediction on CUDA, in a minute or two.

The job's own training loop (bncore.training.loop.train, as the worker runs it, without the API and
its database) against bench.plain_loop's ResNet on the same GPU, in fp32 and under bf16 autocast (BN
in fp32, channels_last), with the same recipe as bench row 8; and the fp32 model's predictions on CUDA
against the CPU's. Without the "resnet" architecture (issue 14 part 1) a three-block CNN stands in.
Then bench row 12 on every GPU of the machine: a data-parallel job (NCCL, SyncBatchNorm, one process per
GPU) against one process on one GPU, the global batch sized so that each GPU's share is row 7's or row 8's
batch (with a single GPU the gang has one process: what launching costs, not what parallelism gains).
"""

import sys
import time

import torch

from bench import data_parallel, efficiency, plain_loop
from bench.report import Row, absolute_row, ratio_row, table
from bench.resnet import DEPTH, RECIPE, RESNET_20, WIDTH, available
from bench.synthetic_images import SHAPE, image_dataset
from bncore.data.builtin import prepare_data
from bncore.specs import JobSpec, ModelSpec, TrainingSpec
from bncore.training.devices import exact_fp32
from bncore.training.loop import train
from bncore.training.networks import build_network
from bncore.training.trained_model import TrainedModel

SAMPLES, EPOCHS = 10_240, 2
PARALLEL_MLP_SAMPLES, PARALLEL_EPOCHS = 131_072, 3  # the first data-parallel epoch is warm-up, not timed
STAND_IN = {"architecture": "cnn", "num_classes": 10, "channels": [32, 64, 128]}
PREDICT_TOLERANCE = 1e-4


def job_seconds(model: ModelSpec, data, training: TrainingSpec) -> tuple[float, torch.nn.Module]:
    """The epochs' seconds as the job reports them, after an untimed epoch that warms up cuDNN."""
    torch.manual_seed(0)
    network = build_network(model, SHAPE).to(data.x_train.device)
    train(network, data, training.model_copy(update={"epochs": 1}))
    torch.manual_seed(0)
    network = build_network(model, SHAPE).to(data.x_train.device)
    result = train(network, data, training)
    return sum(epoch.seconds for epoch in result.history), network


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def measure(device: torch.device, samples: int = SAMPLES) -> tuple[list[Row], bool]:
    """The rows, and whether the device's fp32 predictions agree with the CPU's."""
    resnet = available()
    model = ModelSpec.model_validate({**(RESNET_20 if resnet else STAND_IN), "input_shape": list(SHAPE)})
    name = f"ResNet-{DEPTH}" if resnet else "CNN 32-64-128 (no resnet in this checkout)"
    data = prepare_data(image_dataset(samples), SHAPE, 0.2, 0).to(device)
    trained_samples = EPOCHS * len(data.x_train)
    rows: list[Row] = []
    fp32_network = None
    for bf16 in (False, True):
        training = TrainingSpec.model_validate({"epochs": EPOCHS, "seed": 0, "mixed_precision": bf16, **RECIPE})
        seconds, network = job_seconds(model, data, training)
        if not bf16:
            fp32_network = network
        if resnet:
            plain_loop.train_resnet_seconds(data, DEPTH, WIDTH, 10, 1, RECIPE["batch_size"], bf16=bf16)  # warm-up
            plain = plain_loop.train_resnet_seconds(data, DEPTH, WIDTH, 10, EPOCHS, RECIPE["batch_size"], bf16=bf16)
            rows.append(
                ratio_row(
                    f"{name} training on {device_name(device)}, {'bf16 autocast' if bf16 else 'fp32'} (job vs plain loop)",
                    trained_samples / seconds,
                    trained_samples / plain,
                    "samples/s",
                    0.9,
                    higher_is_better=True,
                    note=f"{len(data.x_train)} images × {EPOCHS} epochs, batch {RECIPE['batch_size']}",
                )
            )
        else:
            rows.append(
                absolute_row(
                    f"{name} training, {'bf16' if bf16 else 'fp32'}", trained_samples / seconds, None, "samples/s", "—", None
                )
            )
    assert fp32_network is not None
    spec = JobSpec.model_validate({"model": model.model_dump(), "dataset": {"name": "synthetic_images"}})
    raw = data.x_val * data.input_std + data.input_mean
    with exact_fp32():
        cuda_logits = TrainedModel(spec, fp32_network.eval(), data.input_mean, data.input_std).predict(raw).logits.cpu()
    on_cpu = TrainedModel(spec, fp32_network.cpu(), data.input_mean.cpu(), data.input_std.cpu())
    difference = (cuda_logits - on_cpu.predict(raw.cpu()).logits).abs().max().item()
    predictions_agree = difference <= PREDICT_TOLERANCE
    rows.append(
        absolute_row(
            f"{name} predict, fp32: largest CUDA − CPU logit difference",
            difference,
            None,
            "",
            f"≤ {PREDICT_TOLERANCE:g}",
            predictions_agree,
            note=f"{len(raw)} validation images",
        )
    )
    return rows, predictions_agree


def data_parallel_rows() -> list[Row]:
    """Row 12 on all GPUs: a gang of one process per GPU against one process on one; none without CUDA."""
    if not torch.cuda.is_available():
        return []
    gpus = torch.cuda.device_count()
    cases = [data_parallel.wide_mlp(PARALLEL_MLP_SAMPLES, PARALLEL_EPOCHS, efficiency.BATCH * gpus)]
    if available():
        cases.append(data_parallel.resnet_20(SAMPLES, PARALLEL_EPOCHS, RECIPE["batch_size"] * gpus, validation=1024))
    return data_parallel.measure(cases, gpus, torch.device("cuda:0"), prefix="")


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device visible: nothing to measure", file=sys.stderr)
        return 1
    device = torch.device("cuda:0")
    rows, predictions_agree = measure(device)
    rows += data_parallel_rows()
    print(table(rows))
    print(f"\n{time.strftime('%Y-%m-%d')} on {device_name(device)}, torch {torch.__version__}")
    return 0 if predictions_agree else 1  # a speed below target is reported, not an error


if __name__ == "__main__":
    sys.exit(main())

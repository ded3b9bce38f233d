"""The training loop. Reads top to bottom: optimizer and schedule, then per epoch a pass in batch order and an evaluation."""

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from bncore.data.builtin import PreparedData
from bncore.specs import TrainingSpec
from bncore.training.activations import ActivationProbe, probe_indices
from bncore.training.augmentation import BatchAugmenter
from bncore.training.batch_order import epoch_batches
from bncore.training.checkpoints import Checkpoint, TrainingState
from bncore.training.early_stopping import BestEpoch
from bncore.training.epoch_metrics import EpochMetrics
from bncore.training.schedules import current_learning_rate, make_scheduler, steps_per_epoch
from bncore.training.sharding import BatchShard

EVAL_BATCH = 4096


DIVERGENCE_CHECK_STEPS = 20


class TrainingInterrupted(Exception):
    """Raised by the `interrupt` callback to stop training between two steps."""


class TrainingDiverged(Exception):
    def __init__(self, epoch: int, step: int | None, loss: float) -> None:
        where = f"epoch {epoch}" + (f", step {step}" if step is not None else "")
        super().__init__(f"the loss became {loss} in {where}; lower the learning rate or use batchnorm")
        self.epoch = epoch
        self.step = step
        self.loss = loss


@dataclass(frozen=True)
class TrainingResult:
    history: list[EpochMetrics]  # every epoch trained, also those after the best under early stopping
    best_epoch: int | None  # under early stopping, the epoch whose weights the network holds; else None

    @property
    def kept(self) -> EpochMetrics:
        """The metrics of the epoch the network's weights come from."""
        return self.history[self.best_epoch - 1] if self.best_epoch is not None else self.history[-1]


def make_optimizer(network: nn.Module, spec: TrainingSpec) -> torch.optim.Optimizer:
    """PyTorch's fused implementation (CPU and CUDA since torch 2.4): one kernel updates every parameter, where
    the default launches several per parameter tensor. A step of the digits MLP's SGD with momentum: ~140 → ~67 µs."""
    params = network.parameters()
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.learning_rate, momentum=spec.momentum, weight_decay=spec.weight_decay, fused=True)
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.learning_rate, weight_decay=spec.weight_decay, fused=True)
    return torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=spec.weight_decay, fused=True)


@contextlib.contextmanager
def batchnorm_in_fp32(network: nn.Module, enabled: bool) -> Iterator[None]:
    """Under bf16 autocast every BN layer still normalises in fp32: its statistics need the precision."""
    handles = [
        module.register_forward_pre_hook(lambda module, args: (args[0].float(),))
        for module in network.modules()
        if enabled and isinstance(module, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def channels_last(network: nn.Module, enabled: bool) -> Iterator[torch.memory_format]:
    """NHWC convolution weights while training: the layout CUDA's tensor-core kernels under autocast
    want, so no layer converts back and forth. Back to the usual layout at the end, as models are
    stored. Yields the layout batches should take.
    """
    if not (enabled and any(isinstance(module, nn.Conv2d) for module in network.modules())):
        yield torch.contiguous_format
        return
    network.to(memory_format=torch.channels_last)  # in place: the optimizer's parameters stay the same objects
    try:
        yield torch.channels_last
    finally:
        network.to(memory_format=torch.contiguous_format)


@torch.inference_mode()
def evaluate(network: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy in eval mode, i.e. with the running BN statistics."""
    network.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for start in range(0, len(x), EVAL_BATCH):
        logits = network(x[start : start + EVAL_BATCH])
        target = y[start : start + EVAL_BATCH]
        loss_sum += F.cross_entropy(logits, target, reduction="sum")
        correct += (logits.argmax(dim=1) == target).sum()
    return (loss_sum / len(x)).item(), (correct / len(x)).item()


def train_epoch(
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: PreparedData,
    spec: TrainingSpec,
    order: torch.Tensor,
    epoch: int,
    interrupt: Callable[[], None],
    memory_format: torch.memory_format = torch.contiguous_format,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    shard: BatchShard | None = None,
    after_step: Callable[[int], None] | None = None,
    batch_sizes: list[int] | None = None,
) -> tuple[float, float]:
    """One pass over the training split in `order`; mean loss and accuracy of its batches.

    `scheduler` steps after every optimizer step; `augment` transforms each batch of inputs;
    `after_step` gets the number (from 1) of each step taken; `batch_sizes` cuts `order` into batches of
    these lengths instead of `spec.batch_size` each. With a `shard`, this process trains on its share of
    each batch, augmented as the whole batch would be, with its loss scaled so that the gradients
    DistributedDataParallel averages are those of the batch's mean.
    """
    device = data.x_train.device
    network.train()
    # Even disabled, autocast's context costs a step tens of microseconds on the CPU.
    autocast = partial(torch.autocast, device.type, dtype=torch.bfloat16) if spec.mixed_precision else contextlib.nullcontext
    # Losses and predictions stay on the device, reduced once at the end: reading them every step would
    # sync a GPU each step, and running sums cost every step four more small kernels.
    losses: list[torch.Tensor] = []
    hits: list[torch.Tensor] = []
    batch_lengths: list[int] = []
    world_size = shard.world_size if shard is not None else 1
    for step, batch in enumerate(order.split(batch_sizes or spec.batch_size), start=1):
        # BN needs more than one value per feature in training: a trailing batch of 1 is dropped, and in a
        # data-parallel job one that cannot give every process 2.
        if len(batch) < 2 * world_size:
            break
        interrupt()
        own = shard.share(len(batch)) if shard is not None else slice(None)
        if augment is not None:
            inputs, targets = augment(data.x_train[batch])[own], data.y_train[batch][own]
        else:
            inputs, targets = data.x_train[batch[own]], data.y_train[batch[own]]
        inputs = inputs.contiguous(memory_format=memory_format)
        with autocast():
            logits = network(inputs)
            if shard is None:
                loss = F.cross_entropy(logits.float(), targets, label_smoothing=spec.label_smoothing)
            else:
                loss = F.cross_entropy(logits.float(), targets, label_smoothing=spec.label_smoothing, reduction="sum") * (
                    world_size / len(batch)
                )
        # A sync every few steps, not every step, to stop a diverging run at once.
        if step % DIVERGENCE_CHECK_STEPS == 0 and not torch.isfinite(loss):
            raise TrainingDiverged(epoch, step, loss.item())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if spec.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(network.parameters(), spec.grad_clip_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step(step)
        losses.append(loss.detach())
        hits.append(logits.detach().argmax(dim=1) == targets)
        batch_lengths.append(len(batch))
    # This process's part of each batch's loss sum: its mean loss times the batch's length over the processes.
    parts = torch.tensor(batch_lengths, dtype=losses[0].dtype, device=device) / world_size
    sums = torch.stack([torch.stack(losses) @ parts, torch.cat(hits).sum().to(losses[0].dtype)])
    if shard is not None:
        sums = shard.sum(sums)
    seen = sum(batch_lengths)
    return (sums[0] / seen).item(), (sums[1] / seen).item()


def _activation_probe(network: nn.Module, data: PreparedData, spec: TrainingSpec) -> ActivationProbe | None:
    if spec.track_activations is None:
        return None
    indices = probe_indices(len(data.x_train), spec.seed).to(data.x_train.device)
    return ActivationProbe(network, spec.track_activations, data.x_train[indices])


def _probe_step(probe: ActivationProbe, probed: list[dict], first_step: int, step: int) -> None:
    """Measure after every `every_steps`-th step, counted over the whole run (0: before the first)."""
    if (first_step + step) % probe.every_steps == 0:
        probed.append(probe.measure(first_step + step))


def train(
    network: nn.Module,
    data: PreparedData,
    spec: TrainingSpec,
    on_epoch: Callable[[EpochMetrics, Callable[[], Checkpoint]], None] = lambda metrics, checkpoint: None,
    interrupt: Callable[[], None] = lambda: None,
    resume: Checkpoint | None = None,
    shard: BatchShard | None = None,
) -> TrainingResult:
    """Train in place on `data` (already on the network's device); one EpochMetrics per epoch.

    After each epoch `on_epoch` gets its metrics and a function that captures a checkpoint, so that a
    caller who checkpoints now and then pays for it only then; `resume` goes on from one. Under early
    stopping the network ends with the best epoch's weights. With a `shard` (one process of a data-parallel
    job, in a process group) the steps train through DistributedDataParallel; evaluation, checkpoints and
    early stopping see the plain network, the same on every process.
    """
    device = data.x_train.device
    optimizer = make_optimizer(network, spec)
    scheduler = make_scheduler(optimizer, spec, len(data.x_train))
    shuffle = torch.Generator().manual_seed(spec.seed)
    augmenter = BatchAugmenter(spec.augmentation, spec.seed, device) if spec.augmentation is not None else None
    augment_generator = augmenter.generator if augmenter is not None else None
    best = BestEpoch(spec.early_stopping.patience) if spec.early_stopping is not None else None
    state = TrainingState(network, optimizer, shuffle, scheduler, augment_generator, best)
    history: list[EpochMetrics] = []
    if resume is not None:
        resume.restore(state)
        history = list(resume.history)
    probe = _activation_probe(network, data, spec)
    on_cuda = device.type == "cuda"
    labels = data.y_train.cpu() if spec.batch_order != "shuffled" else None
    with (
        channels_last(network, spec.mixed_precision and on_cuda) as memory_format,
        batchnorm_in_fp32(network, spec.mixed_precision),
    ):
        stepped = shard.wrap(network) if shard is not None else network
        for epoch in range(len(history) + 1, spec.epochs + 1):
            if best is not None and best.should_stop(epoch - 1):
                break
            started = time.perf_counter()
            learning_rate = current_learning_rate(optimizer)
            order, batch_sizes = epoch_batches(spec, len(data.x_train), labels, shuffle)
            order = order.to(device, non_blocking=True)
            probed: list[dict] | None = None
            after_step = None
            if probe is not None:
                probed = [probe.measure(0)] if epoch == 1 else []
                first_step = (epoch - 1) * steps_per_epoch(len(data.x_train), spec.batch_size)
                after_step = partial(_probe_step, probe, probed, first_step)
            train_loss, train_accuracy = train_epoch(
                stepped,
                optimizer,
                data,
                spec,
                order,
                epoch,
                interrupt,
                memory_format,
                scheduler,
                augmenter,
                shard,
                after_step,
                batch_sizes,
            )
            val_loss, val_accuracy = evaluate(network, data.x_val, data.y_val)
            seconds = time.perf_counter() - started  # honest on CUDA too: evaluate's .item() waited for the device
            for loss in (train_loss, val_loss):
                if not math.isfinite(loss):
                    raise TrainingDiverged(epoch, None, loss)
            metrics = EpochMetrics(epoch, train_loss, train_accuracy, val_loss, val_accuracy, seconds, learning_rate, probed)
            history.append(metrics)
            if best is not None:
                best.update(epoch, val_loss, network)
            on_epoch(metrics, partial(Checkpoint.capture, epoch, list(history), state))
    if best is not None:
        best.restore_into(network)
        return TrainingResult(history, best.epoch)
    return TrainingResult(history, None)

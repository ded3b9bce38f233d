"""Learning-rate schedules: a LambdaLR whose factor is a pure function of the optimisation step.

A closed form of the step (not a rate updated from the last one) makes a resumed job's rates exactly
those of a run never interrupted: the scheduler's state is just its step count, stored as JSON.
Warm-up, exponential and cosine move every step; `step` decays between epochs.
"""

import math
from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR

from bncore.specs import ScheduleSpec, TrainingSpec


def steps_per_epoch(train_samples: int, batch_size: int) -> int:
    """The training loop's optimisation steps per epoch: a trailing batch of one sample is dropped."""
    full, rest = divmod(train_samples, batch_size)
    return full + (1 if rest >= 2 else 0)


def learning_rate_factor(spec: ScheduleSpec, learning_rate: float, epochs: int, steps: int) -> Callable[[int], float]:
    """The factor of `learning_rate` at optimisation step `step` (from 0), with `steps` steps per epoch."""
    steps = max(steps, 1)
    warmup = spec.warmup_epochs * steps
    total = epochs * steps
    floor = min(spec.min_lr / learning_rate, 1.0)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if spec.kind == "step":
            epoch_start = (step // steps) / epochs  # the fraction of training done when this step's epoch began
            return spec.gamma ** sum(epoch_start >= milestone for milestone in spec.milestones)
        if spec.kind == "exponential":
            return spec.gamma ** ((step - warmup) / steps)
        if spec.kind == "cosine":
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return floor + (1 - floor) * (1 + math.cos(math.pi * progress)) / 2
        return 1.0

    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, spec: TrainingSpec, train_samples: int) -> LambdaLR | None:
    """Stepped once after every optimizer step; the optimizer's rate is already the first step's.

    None for a constant rate: a scheduler's step costs tens of microseconds of Python per step for nothing.
    """
    if spec.schedule.kind == "constant" and spec.schedule.warmup_epochs == 0:
        return None
    steps = steps_per_epoch(train_samples, spec.batch_size)
    return LambdaLR(optimizer, learning_rate_factor(spec.schedule, spec.learning_rate, spec.epochs, steps))


def current_learning_rate(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])

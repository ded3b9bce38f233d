from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float  # wall-clock time of the epoch's training and validation passes
    learning_rate: float | None = None  # at the epoch's first step; None: recorded before schedules existed
    # Under `training.track_activations`, this epoch's probes: [{"step", "layers": {name: [p15, p50, p85, mean, std]}}].
    activations: list[dict] | None = None

    def quality(self) -> dict[str, float]:
        """Everything but the wall time: the figures a model keeps as its final metrics, equal across reruns."""
        return {name: value for name, value in asdict(self).items() if name not in ("seconds", "activations")}

"""PNG charts of a job's learning curves and a model's BN layers.

Figures are built with matplotlib's object API on an Agg canvas, never pyplot: pyplot keeps global
state, and these are drawn in whichever request thread asks.
"""

import io
from collections.abc import Mapping, Sequence

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bncore.bn.layers import BatchNormLayer
from bncore.training.epoch_metrics import EpochMetrics

DPI = 100
TRAIN_COLOR, VAL_COLOR = "tab:blue", "tab:orange"

# What each BN quantity starts at (γ = 1, β = 0, statistics of a standard normal), drawn as a reference.
BN_PANELS: list[tuple[str, str, float]] = [
    ("gamma", "γ (scale)", 1.0),
    ("beta", "β (shift)", 0.0),
    ("running_mean", "running mean", 0.0),
    ("running_var", "running variance", 1.0),
]


def _png(figure: Figure, description: str | None = None) -> bytes:
    """`description`, the chart's words, also goes into the PNG's Description text chunk (alt text)."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Description": description} if description else None)
    return buffer.getvalue()


def _message(title: str, text: str) -> bytes:
    figure = Figure(figsize=(8, 3.5), layout="constrained")
    figure.suptitle(title)
    axes = figure.add_subplot()
    axes.set_axis_off()
    axes.text(0.5, 0.5, text, ha="center", va="center", fontsize=13, color="dimgray", transform=axes.transAxes)
    return _png(figure, text)


def _curves(axes: Axes, epochs: list[int], train: list[float], val: list[float], label: str) -> None:
    marker = "o" if len(epochs) <= 30 else None
    axes.plot(epochs, train, color=TRAIN_COLOR, marker=marker, label=f"train {label}")
    axes.plot(epochs, val, color=VAL_COLOR, marker=marker, label=f"validation {label}")
    axes.set_xlabel("epoch")
    axes.set_ylabel(label)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend()


def training_curves_png(metrics: Sequence[EpochMetrics], title: str) -> bytes:
    """Loss and accuracy per epoch, train and validation, side by side."""
    if not metrics:
        return _message(title, "No metrics yet: they appear as each epoch finishes.")
    epochs = [m.epoch for m in metrics]
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    figure.suptitle(title)
    loss, accuracy = figure.subplots(1, 2)
    _curves(loss, epochs, [m.train_loss for m in metrics], [m.val_loss for m in metrics], "loss")
    _curves(accuracy, epochs, [m.train_accuracy for m in metrics], [m.val_accuracy for m in metrics], "accuracy")
    return _png(figure)


def batchnorm_png(layers: Sequence[BatchNormLayer], title: str) -> bytes:
    """One row per BN layer: γ, β, running mean and running variance against the feature index."""
    if not layers:
        return _message(title, "This model has no BN layers (GroupNorm and LayerNorm keep no running statistics).")
    figure = Figure(figsize=(14, 0.6 + 2.4 * len(layers)), layout="constrained")
    figure.suptitle(title)
    grid = figure.subplots(len(layers), len(BN_PANELS), squeeze=False)
    for row, layer in zip(grid, layers, strict=True):
        for axes, (field, label, start) in zip(row, BN_PANELS, strict=True):
            values = getattr(layer, field)
            axes.axhline(start, color="gray", linewidth=0.8, linestyle="--")
            axes.plot(range(len(values)), values, ".", markersize=4, color=TRAIN_COLOR)
            axes.set_title(f"{layer.name}: {label}", fontsize=10)
            axes.grid(alpha=0.3)
        row[0].set_ylabel(f"{layer.num_features} features")
    for axes in grid[-1]:
        axes.set_xlabel("feature (channel)")
    return _png(figure)


def experiment_curves_png(curves: Mapping[str, Sequence[EpochMetrics]], title: str, target: float | None) -> bytes:
    """Validation accuracy and loss of every variant on shared axes, the target accuracy dashed."""
    if not any(curves.values()):
        return _message(title, "No metrics yet: they appear as each variant's epochs finish.")
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    figure.suptitle(title)
    accuracy, loss = figure.subplots(1, 2)
    for name, metrics in curves.items():
        epochs = [m.epoch for m in metrics]
        accuracy.plot(epochs, [m.val_accuracy for m in metrics], label=name)
        loss.plot(epochs, [m.val_loss for m in metrics], label=name)
    if target is not None:
        accuracy.axhline(target, color="gray", linestyle="--", linewidth=0.8, label=f"target {target:g}")
    for axes, label in ((accuracy, "validation accuracy"), (loss, "validation loss")):
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend()
    loss.set_yscale("log")
    return _png(figure)


def activations_png(layers: Sequence[Mapping[str, list]], title: str) -> bytes:
    """As the paper's Figure 1(b, c): per tracked layer, the 15th, 50th and 85th percentiles of the inputs
    to its non-linearity against the training step."""
    if not layers:
        return _message(title, "No activations: the job has no training.track_activations, or no probe yet.")
    columns = min(len(layers), 3)
    rows = -(-len(layers) // columns)
    figure = Figure(figsize=(4.2 * columns, 0.6 + 3.2 * rows), layout="constrained")
    figure.suptitle(title)
    grid = figure.subplots(rows, columns, squeeze=False, sharex=True)
    for axes, layer in zip(grid.flat, layers, strict=False):
        axes.fill_between(layer["steps"], layer["p15"], layer["p85"], color=TRAIN_COLOR, alpha=0.15)
        for key, style in (("p15", "--"), ("p50", "-"), ("p85", "--")):
            axes.plot(layer["steps"], layer[key], style, color=TRAIN_COLOR, label=key)
        axes.set_title(f"{layer['name']}: inputs to the non-linearity", fontsize=10)
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
    grid.flat[0].legend()
    for axes in list(grid.flat)[len(layers) :]:
        axes.set_axis_off()
    return _png(figure)

"""Readable default names for jobs and models, e.g. `mlp-3x100-bn-digits`."""

from typing import Any

MAX_NAME_LENGTH = 100
NORMALIZATION_LABELS = {"batchnorm": "bn", "batch_renorm": "brn", "group_norm": "gn", "layer_norm": "ln"}


def _sizes(sizes: list[int]) -> str:
    """`3x100` for equal widths, `64-32` otherwise, `linear` for none."""
    if not sizes:
        return "linear"
    if len(set(sizes)) == 1 and len(sizes) > 1:
        return f"{len(sizes)}x{sizes[0]}"
    return "-".join(map(str, sizes))


def default_name(spec: dict[str, Any], dataset_label: str | None = None) -> str:
    """Architecture, widths (a resnet's depth × width), the normalisation (`bn`, `brn`, `gn`, `ln`, `nobn`),
    and the dataset: its name, or an upload's id when no label is given.
    """
    model = spec.get("model", {})
    architecture = str(model.get("architecture", "model"))
    if architecture == "resnet":
        shape = f"{model.get('depth', 20)}x{model.get('width', 16)}"  # depth × base width: resnet-20x16
    else:
        shape = _sizes(list(model.get("hidden_sizes" if architecture == "mlp" else "channels") or []))
    normalization = NORMALIZATION_LABELS.get(str(model.get("normalization", "batchnorm")), "nobn")
    dataset = spec.get("dataset", {})
    label = dataset_label or dataset.get("name") or dataset.get("id") or "data"
    return f"{architecture}-{shape}-{normalization}-{label}"[:MAX_NAME_LENGTH]

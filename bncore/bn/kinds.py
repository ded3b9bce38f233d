"""Which normalisations keep running statistics, and what serving does without them.

Torch-free: the API's schemas and the SDK read it.
"""

WITH_RUNNING_STATISTICS = frozenset({"batchnorm", "batch_renorm"})
BATCH_INDEPENDENT = frozenset({"group_norm", "layer_norm"})


def no_statistics_reason(normalization: str) -> str | None:
    """Why a model with this normalisation has no running statistics; None when its layers keep them."""
    if normalization in WITH_RUNNING_STATISTICS:
        return None
    if normalization in BATCH_INDEPENDENT:
        return (
            f"{normalization} normalises each sample with that sample's own statistics, in training and serving alike: "
            "its layers keep no running statistics"
        )
    return "the model has no normalisation layers (normalization: none)"


def folding_note(normalization: str) -> str | None:
    reason = no_statistics_reason(normalization)
    return None if reason is None else f"folding does not apply: {reason} to merge into the layer before"


def drift_note(normalization: str) -> str | None:
    reason = no_statistics_reason(normalization)
    return None if reason is None else f"drift monitoring does not apply: {reason} to compare serving inputs with"

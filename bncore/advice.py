"""Advice on a job spec at submission: what will likely hurt, and the options that help. Never an error."""

from bncore.specs import JobSpec

SMALL_BATCH = 8
REMEDIES = (
    "consider model.normalization 'batch_renorm', 'group_norm' or 'layer_norm' "
    "(docs/training-recipes.md, 'Small or non-i.i.d. batches')"
)


def spec_warnings(spec: JobSpec) -> list[str]:
    """Warnings for a JobOut's `warnings` list, computed from the spec alone."""
    model, training = spec.model, spec.training
    warnings = []
    if model.normalization == "batchnorm" and training.batch_size < SMALL_BATCH:
        warnings.append(
            f"training.batch_size {training.batch_size} is under {SMALL_BATCH}: BN's batch statistics are noisy and "
            f"differ from the running statistics used at inference (Ioffe 2017); {REMEDIES}"
        )
    if training.batch_order == "class_sorted":
        warnings.append(
            "training.batch_order 'class_sorted': each batch holds one or two classes, so batch statistics differ from "
            f"the population's and BN's inference suffers; use it to reproduce that failure mode, or {REMEDIES}"
        )
    elif training.batch_order == "grouped" and model.normalization == "batchnorm":
        warnings.append(
            f"training.batch_order 'grouped': each batch holds {training.batch_group_size} class(es), not i.i.d.; "
            f"BN's batch statistics differ from the population's; {REMEDIES}"
        )
    return warnings

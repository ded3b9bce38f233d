"""Which samples make each training batch in an epoch: shuffled (i.i.d.), or non-i.i.d. on purpose.

Non-i.i.d. batches reproduce the failure mode of BN the Batch Renorm paper studies (Ioffe 2017,
section 4.3): batch statistics that differ from the population's. Every order draws from the one
seeded generator the checkpoint holds, so a resumed job goes on exactly as it would have.
"""

import torch

from bncore.specs import TrainingSpec


def epoch_batches(
    spec: TrainingSpec, samples: int, labels: torch.Tensor | None, generator: torch.Generator
) -> tuple[torch.Tensor, list[int] | None]:
    """The epoch's sample order, and the batch lengths to cut it into (None: `batch_size` each).

    `labels` (on the CPU) are needed for every order but `shuffled`.
    """
    order = torch.randperm(samples, generator=generator)
    if spec.batch_order == "shuffled":
        return order, None
    assert labels is not None
    if spec.batch_order == "class_sorted":
        # Shuffled within each class, classes one after another.
        return order[torch.sort(labels[order], stable=True).indices], None
    return _grouped(spec, order, labels, generator)


def _grouped(
    spec: TrainingSpec, order: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, list[int]]:
    """Classes in random groups of `batch_group_size`; each batch from one group; the batches in random order.

    A group's last batch may be shorter; a last batch of one sample is left out (BN needs two).
    """
    classes = torch.unique(labels)
    classes = classes[torch.randperm(len(classes), generator=generator)]
    batches: list[torch.Tensor] = []
    for group in classes.split(spec.batch_group_size):
        members = order[torch.isin(labels[order], group)]
        batches += [batch for batch in members.split(spec.batch_size) if len(batch) > 1]
    batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return torch.cat(batches), [len(batch) for batch in batches]

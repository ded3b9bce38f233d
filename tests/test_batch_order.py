"""Non-i.i.d. batches on purpose (`training.batch_order`), seeded and resumable like shuffled ones."""

import copy
from collections.abc import Callable

import torch

from bncore.jobs.execution import train_model
from bncore.jobs.planning import plan_job
from bncore.specs import JobSpec, TrainingSpec
from bncore.training.batch_order import epoch_batches
from bncore.training.checkpoints import Checkpoint

LABELS = torch.arange(10).repeat_interleave(torch.tensor([30, 31, 29, 33, 30, 28, 35, 30, 30, 31]))[torch.randperm(307)]


def batches(spec: TrainingSpec, seed: int = 0) -> list[torch.Tensor]:
    order, sizes = epoch_batches(spec, len(LABELS), LABELS, torch.Generator().manual_seed(seed))
    return list(order.split(sizes or spec.batch_size))


def test_shuffled_batches_are_the_seeded_permutation_the_loop_always_took() -> None:
    order, sizes = epoch_batches(TrainingSpec(), len(LABELS), None, torch.Generator().manual_seed(3))
    assert sizes is None
    assert torch.equal(order, torch.randperm(len(LABELS), generator=torch.Generator().manual_seed(3)))


def test_class_sorted_batches_come_one_class_after_another() -> None:
    spec = TrainingSpec(batch_order="class_sorted", batch_size=16)
    order = torch.cat(batches(spec))
    assert sorted(order.tolist()) == list(range(len(LABELS)))
    assert torch.equal(LABELS[order], torch.sort(LABELS).values)
    assert not torch.equal(order, torch.cat(batches(spec, seed=1)))  # shuffled within each class, by the seed


def test_grouped_batches_each_hold_at_most_the_group_size_of_classes() -> None:
    spec = TrainingSpec(batch_order="grouped", batch_group_size=2, batch_size=16)
    drawn = batches(spec)
    assert all(len(torch.unique(LABELS[batch])) <= 2 for batch in drawn)
    assert any(len(torch.unique(LABELS[batch])) == 2 for batch in drawn)
    assert all(len(batch) >= 2 for batch in drawn)
    seen = torch.cat(drawn).tolist()
    assert len(seen) == len(set(seen)) and len(seen) >= len(LABELS) - 5  # only a group's trailing single is left out
    assert [b.tolist() for b in drawn] == [b.tolist() for b in batches(spec)]
    assert [b.tolist() for b in drawn] != [b.tolist() for b in batches(spec, seed=1)]


def test_a_grouped_job_resumed_from_a_checkpoint_ends_as_one_that_ran_straight_through() -> None:
    spec = plan_job(
        JobSpec.model_validate(
            {
                "model": {"architecture": "mlp", "num_classes": 10, "hidden_sizes": [16], "normalization": "batch_renorm"},
                "dataset": {"name": "digits"},
                "training": {"epochs": 3, "batch_order": "grouped", "batch_group_size": 3, "seed": 4},
            }
        ),
        max_parameters=10**7,
        max_sample_epochs=10**9,
    )
    checkpoints: list[Checkpoint] = []

    def keep(metrics: object, capture: Callable[[], Checkpoint]) -> None:
        # A deep copy, as storing it would make: a capture holds the live tensors, which training goes on changing.
        checkpoints.append(copy.deepcopy(capture()))

    straight, _ = train_model(spec, torch.device("cpu"), on_epoch=keep)

    resumed, _ = train_model(spec, torch.device("cpu"), resume=checkpoints[0])

    straight_state, resumed_state = straight.network.state_dict(), resumed.network.state_dict()
    for name, value in straight_state.items():
        assert torch.equal(value, resumed_state[name]), name

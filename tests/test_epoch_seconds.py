"""Each epoch says how long it took; epochs and checkpoints from before the service timed them read as 0 s."""

import json
from datetime import datetime
from pathlib import Path

import httpx
from alembic import command
from sqlalchemy import create_engine, text

from bncore.data.builtin import load_dataset, prepare_data
from bncore.specs import ModelSpec, TrainingSpec
from bncore.storage.database import Database
from bncore.storage.job_store import JobStore
from bncore.storage.migrations import alembic_config, upgrade_database
from bncore.training.checkpoints import Checkpoint
from bncore.training.loop import train as train_network
from bncore.training.networks import build_network
from tests.support.jobs import job_request, train


def test_a_finished_job_says_how_long_each_epoch_took(client: httpx.Client) -> None:
    job = train(client, job_request(training={"epochs": 3}))
    seconds = [m["seconds"] for m in job["metrics"]]
    assert len(seconds) == 3 and all(s > 0 for s in seconds)
    span = datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
    assert sum(seconds) <= span.total_seconds()


def test_a_job_resumed_from_an_older_checkpoint_goes_on_with_0_s_for_its_epochs() -> None:
    data = prepare_data(load_dataset("iris"), (4,), 0.2, 0)
    model, spec = ModelSpec(architecture="mlp", num_classes=3, hidden_sizes=[8]), TrainingSpec(epochs=2)
    captured: list[Checkpoint] = []
    train_network(
        build_network(model, (4,)),
        data,
        spec.model_copy(update={"epochs": 1}),
        on_epoch=lambda metrics, capture: captured.append(capture()),
    )
    header = json.loads(captured[0].metadata["checkpoint"])
    for metrics in header["history"]:
        del metrics["seconds"]
    older = Checkpoint.from_stored(captured[0].tensors, {"checkpoint": json.dumps(header)})

    history = train_network(build_network(model, (4,)), data, spec, resume=older).history

    assert history[0].seconds == 0.0 and history[1].seconds > 0


def test_epochs_recorded_before_migration_0005_read_as_0_s(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    command.upgrade(alembic_config(url), "0004")
    with create_engine(url).begin() as connection:
        connection.execute(
            text(
                "INSERT INTO jobs (id, status, spec, created_at, epochs, cancel_requested, attempts) "
                "VALUES ('job_old', 'succeeded', :spec, '2025-01-01 00:00:00', 1, 0, 1)"
            ),
            {"spec": json.dumps(job_request())},
        )
        connection.execute(
            text(
                "INSERT INTO job_epochs (job_id, epoch, train_loss, train_accuracy, val_loss, val_accuracy) "
                "VALUES ('job_old', 1, 0.5, 0.8, 0.4, 0.9)"
            )
        )

    upgrade_database(url)

    (epoch,) = JobStore(Database(url)).get("job_old").metrics
    assert (epoch.val_accuracy, epoch.seconds) == (0.9, 0.0)

"""The Celery settings that keep jobs safe, read from the one configuration table."""

import os
import subprocess
import sys

from fastapi.testclient import TestClient

from bncore.settings import Settings
from service.app import create_app
from tests.support.jobs import job_request
from tests.support.processes import ROOT
from worker.app import TRAIN_TASK, celery_config, worker_queues
from worker.broker import waiting_job_ids


def test_redis_deployments_acknowledge_late_and_time_limits_are_ordered() -> None:
    config = celery_config(Settings(redis_url="redis://127.0.0.1:6379/0", job_time_limit_seconds=600))
    assert config["broker_url"] == "redis://127.0.0.1:6379/0"
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert config["worker_prefetch_multiplier"] == 1
    assert config["accept_content"] == ["json"] and config["task_serializer"] == "json"
    visibility = config["broker_transport_options"]["visibility_timeout"]
    assert 600 < config["task_soft_time_limit"] < config["task_time_limit"] < visibility


def test_the_embedded_broker_is_a_folder_and_needs_no_server(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path)
    config = celery_config(settings)
    assert config["broker_url"] == "filesystem://"
    assert config["broker_transport"] == "worker.broker:Transport"
    assert (tmp_path / "broker" / "queue").is_dir()


def test_workers_take_the_queues_of_their_device_unless_told() -> None:
    assert worker_queues(Settings()) == ["cpu", "any"]  # no GPU on this machine
    assert worker_queues(Settings(worker_queues="gpu, any")) == ["gpu", "any"]


def test_importing_the_service_and_the_worker_creates_no_folder(tmp_path) -> None:
    """Only building an app reads settings and makes its folders: an import does neither."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    modules = "import worker.app, worker.tasks, worker.__main__, service.app, service.__main__"
    subprocess.run([sys.executable, "-c", modules], cwd=ROOT, env={**os.environ, "DATA_DIR": str(data_dir)}, check=True)
    assert list(data_dir.iterdir()) == []


def test_each_api_enqueues_through_the_broker_its_settings_name(tmp_path) -> None:
    first, second = Settings(data_dir=tmp_path / "first"), Settings(data_dir=tmp_path / "second")
    with TestClient(create_app(first)) as first_api, TestClient(create_app(second)) as second_api:
        first_job = submitted(first_api)
        second_job = submitted(second_api)
    assert waiting_job_ids(first.broker_folder / "queue", TRAIN_TASK) == {first_job}
    assert waiting_job_ids(second.broker_folder / "queue", TRAIN_TASK) == {second_job}


def submitted(api: TestClient) -> str:
    response = api.post("/v1/jobs", json=job_request())
    assert response.status_code == 202, response.text
    return response.json()["id"]

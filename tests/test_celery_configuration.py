"""The Celery settings that keep jobs safe, read from the one configuration table."""

from bncore.settings import Settings
from worker.app import celery_config, worker_queues


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

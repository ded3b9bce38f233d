"""A notebook user trains and uses a model through the Python SDK."""

import uuid

import numpy as np
import pytest
from sklearn.datasets import load_digits

from bnjobs import ApiError, Client, JobFailed


def test_train_wait_with_a_progress_bar_and_predict(service, capsys: pytest.CaptureFixture[str]) -> None:
    with Client(service.url) as client:
        job = client.jobs.create(
            model={"architecture": "mlp", "num_classes": 10}, dataset={"name": "digits"}, training={"epochs": 3}
        )
        finished = job.wait(progress=True, timeout=180)
        assert finished.status == "succeeded" and len(finished.metrics) == 3
        assert "3/3" in capsys.readouterr().err

        model = job.model()
        x, y = load_digits(return_X_y=True)
        classes = model.predict(x[:100])
        assert classes.shape == (100,) and np.mean(classes == y[:100]) > 0.9
        probabilities = model.predict_proba(x[:5])
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
        assert [layer.name for layer in model.batchnorm().layers] == ["bn1", "bn2", "bn3"]
        assert "digits" in {dataset.name for dataset in client.datasets.list()}


def test_errors_carry_the_services_message_and_fields(service) -> None:
    with Client(service.url) as client:
        with pytest.raises(ApiError) as refused:
            client.jobs.create(model={"architecture": "mlp", "num_classes": 10}, dataset={"name": "mnist"})
        assert refused.value.status == 422 and refused.value.fields[0]["field"] == "dataset.name"
        assert "unknown dataset 'mnist'" in str(refused.value)
        job = client.jobs.create(
            model={"architecture": "mlp", "num_classes": 10, "normalization": "none"},
            dataset={"name": "digits"},
            training={"epochs": 50, "learning_rate": 10.0},
        )
        with pytest.raises(JobFailed, match="diverged"):
            job.wait(timeout=180)
        with pytest.raises(ApiError, match="404"):
            client.models.get("model_missing")


def test_run_an_experiment_wait_for_its_table_and_find_it_listed(service) -> None:
    with Client(service.url) as client:
        request = {
            "name": "relu or sigmoid on iris",
            "base": {
                "model": {"architecture": "mlp", "num_classes": 3, "hidden_sizes": [16]},
                "dataset": {"name": "iris"},
                "training": {"epochs": 2, "batch_size": 16},
            },
            "variants": [{"name": "relu"}, {"name": "sigmoid", "overrides": {"model": {"activation": "sigmoid"}}}],
            "target_accuracy": 0.5,
        }
        key = f"sdk-{uuid.uuid4().hex}"
        experiment = client.experiments.create(**request, idempotency_key=key)
        assert client.experiments.create(**request, idempotency_key=key).id == experiment.id  # a retry starts nothing
        table = experiment.wait(timeout=180)
        assert table.status == "finished" and [v.name for v in table.variants] == ["relu", "sigmoid"]
        assert client.jobs.get(table.variants[1].job_id).info.spec.model.activation == "sigmoid"
        assert all(v.status == "succeeded" and v.best_val_accuracy is not None for v in table.variants)
        assert table in client.experiments.list(limit=None)
        assert client.experiments.get(experiment.id).info == table

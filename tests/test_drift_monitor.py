"""The service watches what each BN layer sees while serving and says when inputs drift from training."""

import json
import threading
from datetime import datetime, timezone

import httpx
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from bncore.serving.drift import DriftThresholds
from bncore.serving.served_model import ServedModel
from bncore.storage.drift_store import LayerMoments, PublishedMoments
from tests.support.jobs import job_request, train
from tests.support.trained_models import ARCHITECTURES, digits_inputs, train_digits

THRESHOLDS = DriftThresholds(mean_shift_threshold=0.5, variance_ratio_min=0.5, variance_ratio_max=2.0, min_samples=100)


def test_training_like_inputs_keep_every_layer_calm_and_shifted_inputs_raise_the_alarm(client: httpx.Client) -> None:
    model_id = train(client, job_request())["model_id"]  # its own model: no other test's inputs in its statistics
    url = f"/v1/models/{model_id}"
    digits = load_digits().data

    before = datetime.now(timezone.utc)
    fresh = client.get(f"{url}/drift")
    assert fresh.status_code == 200
    report = fresh.json()
    assert report["model_id"] == model_id and report["samples_seen"] == 0 and report["drifted"] is False
    assert before <= datetime.fromisoformat(report["since"]) <= datetime.now(timezone.utc)
    assert report["thresholds"] == {"mean_shift": 0.5, "variance_ratio_min": 0.5, "variance_ratio_max": 2.0, "min_samples": 100}
    assert [(layer["name"], layer["samples"], layer["mean_shift"]) for layer in report["layers"]] == [
        ("bn1", 0, None),
        ("bn2", 0, None),
        ("bn3", 0, None),
    ]

    for start in range(0, len(digits), 500):
        assert client.post(f"{url}/predict", json={"inputs": digits[start : start + 500].tolist()}).status_code == 200
    calm = client.get(f"{url}/drift")
    assert calm.status_code == 200
    report = calm.json()
    assert report["samples_seen"] == len(digits) and report["drifted"] is False
    assert report["since"] == fresh.json()["since"]
    for layer in report["layers"]:
        assert layer["samples"] == len(digits) and layer["drifted"] is False
        assert layer["mean_shift"] < 0.25
        assert 0.6 < layer["variance_ratio"] < 1.6

    shifted = digits * 3 + 5  # a recalibrated sensor: the same digits in other units
    assert client.post(f"{url}/predict", json={"inputs": shifted.tolist()}).status_code == 200
    alarm = client.get(f"{url}/drift")
    assert alarm.status_code == 200
    report = alarm.json()
    assert report["samples_seen"] == 2 * len(digits) and report["drifted"] is True
    assert report["layers"][0]["mean_shift"] > 2 and report["layers"][0]["drifted"] is True
    for layer, earlier in zip(report["layers"], calm.json()["layers"], strict=True):
        assert layer["mean_shift"] > 4 * earlier["mean_shift"]


def test_a_model_without_bn_reports_no_layers_and_unknown_models_are_404(client: httpx.Client) -> None:
    job = train(client, job_request(model={"normalization": "none", "hidden_sizes": [16]}, training={"epochs": 1}))
    url = f"/v1/models/{job['model_id']}"
    assert client.post(f"{url}/predict", json={"inputs": [[0.0] * 64] * 3}).status_code == 200

    response = client.get(f"{url}/drift")

    assert response.status_code == 200
    assert response.json()["layers"] == []
    assert response.json()["samples_seen"] == 3 and response.json()["drifted"] is False
    assert client.get("/v1/models/model_missing/drift").status_code == 404


def recorded_bn_inputs(network: nn.Module, inputs: torch.Tensor) -> dict[str, np.ndarray]:
    """Each BN layer's input, one row per value a feature normalises, captured from the training-form network."""
    seen: dict[str, np.ndarray] = {}

    def record(name: str, x: torch.Tensor) -> None:
        seen[name] = x.movedim(1, -1).reshape(-1, x.shape[1]).double().numpy()

    hooks = [
        module.register_forward_pre_hook(lambda m, args, name=name: record(name, args[0]))
        for name, module in network.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        network.eval()
        with torch.no_grad():
            network(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


@pytest.mark.parametrize("architecture", ["mlp", "cnn", "after_activation", "resnet"])
def test_folded_and_unfolded_monitors_report_the_statistics_bn_sees(architecture: str) -> None:
    trained = train_digits(ARCHITECTURES[architecture])
    digits = digits_inputs(trained)
    batches = [digits[:700], digits[700:701], digits[701:] * 3 + 5]
    folded, unfolded = ServedModel.of(trained, fold_batchnorm=True), ServedModel.of(trained, fold_batchnorm=False)

    for batch in batches:
        folded.predict(batch)
        unfolded.predict(batch)

    everything = torch.cat(batches)
    expected = recorded_bn_inputs(trained.network, (everything - trained.input_mean) / trained.input_std)
    from_folded, from_unfolded = folded.drift.statistics(), unfolded.drift.statistics()
    assert list(from_folded) == list(from_unfolded) == list(expected)
    for name, rows in expected.items():
        for statistics in (from_folded[name], from_unfolded[name]):
            assert statistics.samples == len(everything)
            np.testing.assert_allclose(statistics.mean.numpy(), rows.mean(axis=0), rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(statistics.variance.numpy(), rows.var(axis=0), rtol=1e-4, atol=1e-4)
    folded_report, unfolded_report = folded.drift.report(THRESHOLDS), unfolded.drift.report(THRESHOLDS)
    for a, b in zip(folded_report.layers, unfolded_report.layers, strict=True):
        assert a.name == b.name and a.drifted == b.drifted
        assert a.mean_shift == pytest.approx(b.mean_shift, rel=1e-4, abs=1e-4)
        assert a.variance_ratio == pytest.approx(b.variance_ratio, rel=1e-4, abs=1e-4)


def test_one_row_requests_add_up_to_the_statistics_bn_sees() -> None:
    """One-row passes' values are summed together later (on a read, or once enough are waiting): none is lost."""
    trained = train_digits(ARCHITECTURES["cnn"], epochs=1)
    rows = digits_inputs(trained)[:300] * 1.5 - 2
    served = ServedModel.of(trained, fold_batchnorm=True)

    for row in range(150):
        served.predict(rows[row : row + 1])
    halfway = served.drift.statistics()
    for row in range(150, 300):
        served.predict(rows[row : row + 1])

    for seen, count in ((halfway, 150), (served.drift.statistics(), 300)):
        expected = recorded_bn_inputs(trained.network, (rows[:count] - trained.input_mean) / trained.input_std)
        assert list(seen) == list(expected)
        for name, values in expected.items():
            assert seen[name].samples == count
            np.testing.assert_allclose(seen[name].mean.numpy(), values.mean(axis=0), rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(seen[name].variance.numpy(), values.var(axis=0), rtol=1e-4, atol=1e-4)


def test_a_handful_of_odd_samples_is_not_yet_called_drift() -> None:
    trained = train_digits(ARCHITECTURES["mlp"], epochs=1)
    served = ServedModel.of(trained, fold_batchnorm=True)
    odd = digits_inputs(trained)[:150] * 3 + 5

    served.predict(odd[:99])
    early = served.drift.report(THRESHOLDS)
    served.predict(odd[99:])
    late = served.drift.report(THRESHOLDS)

    assert early.samples_seen == 99 and early.layers[0].mean_shift > THRESHOLDS.mean_shift_threshold and not early.drifted
    assert late.samples_seen == 150 and late.drifted and all(layer.drifted for layer in late.layers)


def test_concurrent_requests_lose_no_samples() -> None:
    trained = train_digits(ARCHITECTURES["cnn"], epochs=1)
    digits = digits_inputs(trained)
    concurrent, sequential = ServedModel.of(trained, fold_batchnorm=True), ServedModel.of(trained, fold_batchnorm=True)
    batches = [digits[i : i + 37] for i in range(0, 37 * 40, 37)]

    def serve(part: list[torch.Tensor]) -> None:
        for batch in part:
            concurrent.predict(batch)

    threads = [threading.Thread(target=serve, args=(batches[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for batch in batches:
        sequential.predict(batch)

    assert concurrent.drift.report(THRESHOLDS).samples_seen == 37 * 40
    for name, statistics in sequential.drift.statistics().items():
        together = concurrent.drift.statistics()[name]
        assert together.samples == statistics.samples == 37 * 40
        torch.testing.assert_close(together.mean, statistics.mean)
        torch.testing.assert_close(together.variance, statistics.variance)


def test_two_processes_moments_merge_into_what_bn_saw_of_both() -> None:
    """What another API process publishes (as JSON, through the database) adds up with this process's moments."""
    trained = train_digits(ARCHITECTURES["cnn"])
    digits = digits_inputs(trained)
    here, there = ServedModel.of(trained, fold_batchnorm=True), ServedModel.of(trained, fold_batchnorm=True)
    here.predict(digits[:600])
    there.predict(digits[600:900] * 2 + 1)
    published = there.drift.published()
    through_json = PublishedMoments(
        published.since,
        published.samples,
        {name: LayerMoments(**json.loads(json.dumps(vars(layer)))) for name, layer in published.layers.items()},
    )

    report = here.drift.report(THRESHOLDS, [through_json])

    everything = torch.cat([digits[:600], digits[600:900] * 2 + 1])
    expected = recorded_bn_inputs(trained.network, (everything - trained.input_mean) / trained.input_std)
    assert report.samples_seen == 900 and report.since == min(here.drift.since, there.drift.since)
    modules = dict(trained.network.named_modules())
    for layer in report.layers:
        rows, bn = expected[layer.name], modules[layer.name]
        train_std = np.sqrt(bn.running_var.numpy().astype(np.float64) + bn.eps)
        shift = np.abs(rows.mean(axis=0) - bn.running_mean.numpy()) / train_std
        ratio = (rows.var(axis=0) + bn.eps) / train_std**2
        assert layer.samples == 900
        assert layer.mean_shift == pytest.approx(shift.mean(), rel=1e-4, abs=1e-5)
        assert layer.variance_ratio == pytest.approx(ratio.mean(), rel=1e-4, abs=1e-5)

"""A user trains a CIFAR-style ResNet (He et al. 2016) and every BN-aware feature works on it."""

from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from bncore.bn.population_statistics import recalibrated
from bncore.data.builtin import generate_shapes32, load_dataset, raw_samples, split_indices
from bncore.jobs.execution import train_model
from bncore.serving.onnx_export import to_onnx
from bncore.specs import JobSpec, ModelSpec
from bncore.training.checkpoints import Checkpoint
from bncore.training.networks import build_network, parameter_count
from bncore.training.resnet import BasicBlock
from tests.conftest import RunningService
from tests.support.jobs import job_request, train, wait_for
from tests.support.processes import ROOT
from tests.support.trained_models import ARCHITECTURES, RESNET8_BATCHNORMS, digits_inputs, from_artifact, train_digits
from tests.test_readme_examples import run_command, sh_commands, started_jobs


def stored_copy(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in tensors.items()}


RESNET = {"architecture": "resnet", "input_shape": [1, 8, 8], "depth": 8, "width": 8}


def batchnorm_inputs(network: nn.Module, inputs: torch.Tensor) -> dict[str, np.ndarray]:
    """What each BN layer normalises in eval mode, one row per value a feature sees, captured by hooks."""
    seen: dict[str, np.ndarray] = {}
    hooks = [
        module.register_forward_pre_hook(
            lambda m, args, name=name: seen.__setitem__(
                name, args[0].movedim(1, -1).reshape(-1, args[0].shape[1]).double().numpy()
            )
        )
        for name, module in network.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        with torch.no_grad():
            network.eval()(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def test_a_resnet_20_has_the_papers_layers_and_parameters() -> None:
    spec = ModelSpec(architecture="resnet", num_classes=10, depth=20, input_shape=[3, 32, 32])
    network = build_network(spec, (3, 32, 32))

    convs = [name for name, m in network.named_modules() if isinstance(m, nn.Conv2d)]
    projections = [name for name in convs if "shortcut" in name]
    assert len(convs) - len(projections) + 1 == 20  # 6n+2 weighted layers: the stem, 2 per block, the head
    assert projections == ["stage2.0.shortcut.conv", "stage3.0.shortcut.conv"]
    assert all(m.bias is None for m in network.modules() if isinstance(m, nn.Conv2d))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in network.modules()) == 19 + 2
    assert [m.out_channels for m in network.modules() if isinstance(m, nn.Conv2d)][-1] == 64
    assert 0.26e6 < parameter_count(spec, (3, 32, 32)) < 0.28e6  # the paper's 0.27M
    assert network(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_zero_init_residual_starts_each_block_as_its_shortcut() -> None:
    spec = ModelSpec(architecture="resnet", num_classes=10, depth=14, zero_init_residual=True, input_shape=[3, 8, 8])
    network = build_network(spec, (3, 8, 8))

    blocks = [m for m in network.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 6
    for block in blocks:
        assert torch.equal(block.bn2.weight, torch.zeros_like(block.bn2.weight))
        assert torch.equal(block.bn1.weight, torch.ones_like(block.bn1.weight))
    plain = build_network(spec.model_copy(update={"zero_init_residual": False}), (3, 8, 8))
    assert all(torch.equal(b.bn2.weight, torch.ones_like(b.bn2.weight)) for b in plain.modules() if isinstance(b, BasicBlock))


def test_population_statistics_of_a_resnet_are_those_of_each_layers_inputs() -> None:
    """After recalibration every BN's statistics are the mean and unbiased variance (numpy) of what it then normalises."""
    parent = train_digits(RESNET, epochs=1)
    dataset = load_dataset("digits")
    train_split, _ = split_indices(dataset.info.num_samples, parent.spec.training.validation_fraction, parent.spec.training.seed)
    inputs = raw_samples(dataset, parent.input_shape, train_split)

    model = recalibrated(parent, inputs)

    seen = batchnorm_inputs(model.network, (inputs - model.input_mean) / model.input_std)
    assert list(seen) == RESNET8_BATCHNORMS
    for name, rows in seen.items():
        bn = model.network.get_submodule(name)
        np.testing.assert_allclose(bn.running_mean.numpy(), rows.mean(axis=0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.running_var.numpy(), rows.var(axis=0, ddof=1), rtol=1e-5)
        assert not torch.equal(bn.running_var, parent.network.get_submodule(name).running_var)


def test_the_onnx_export_of_a_resnet_folds_every_bn_and_answers_as_predict() -> None:
    trained = train_digits(RESNET, epochs=1)
    samples = digits_inputs(trained).numpy()

    exported = to_onnx(trained)

    assert "BatchNormalization" not in {node.op_type for node in onnx.load_from_string(exported).graph.node}
    session = onnxruntime.InferenceSession(exported, providers=["CPUExecutionProvider"])
    [given] = session.get_inputs()
    for batch in (samples[:1], samples[:9], samples[:600]):
        [logits] = session.run(None, {given.name: batch})
        np.testing.assert_allclose(logits, trained.predict(torch.from_numpy(batch)).logits.numpy(), rtol=0, atol=1e-4)


def test_a_resnet_resumed_from_a_checkpoint_equals_one_never_stopped() -> None:
    body = JobSpec.model_validate(
        {"model": {"num_classes": 10, **RESNET}, "dataset": {"name": "digits"}, "training": {"epochs": 2}}
    )
    checkpoints: list[Checkpoint] = []

    def keep(metrics: object, capture: Callable[[], Checkpoint]) -> None:
        checkpoint = capture()  # its tensors are the live ones: copied, as storing it would
        checkpoints.append(Checkpoint(checkpoint.epoch, checkpoint.history, stored_copy(checkpoint.tensors), checkpoint.metadata))

    clean, _ = train_model(body, torch.device("cpu"), on_epoch=keep)

    resumed, result = train_model(body, torch.device("cpu"), resume=checkpoints[0])

    assert [m.epoch for m in result.history] == [1, 2]
    clean_state, resumed_state = clean.network.state_dict(), resumed.network.state_dict()
    assert any(".shortcut.bn.running_var" in name for name in clean_state)
    for name, tensor in clean_state.items():
        assert torch.equal(resumed_state[name], tensor), name


@pytest.fixture(scope="module")
def resnet_model(service: RunningService) -> dict:
    with httpx.Client(base_url=service.url, timeout=60) as client:
        job = train(client, job_request(model=ARCHITECTURES["resnet"], training={"epochs": 3, "learning_rate": 0.05}))
        return client.get(f"/v1/models/{job['model_id']}").json()


def test_a_resnet_trained_through_the_api_lists_folds_and_serves_every_bn_layer(client: httpx.Client, resnet_model: dict) -> None:
    url = f"/v1/models/{resnet_model['id']}"
    digits = load_digits()
    samples = digits.data[:300].reshape(-1, 1, 8, 8)

    batchnorm = client.get(f"{url}/batchnorm")
    predicted = client.post(f"{url}/predict", json={"inputs": samples.tolist()})
    artifact = client.get(f"{url}/artifact")

    assert resnet_model["spec"]["model"]["depth"] == 8 and resnet_model["final_metrics"]["val_accuracy"] > 0.8
    assert resnet_model["serving"] == {"folded": True, "folded_layers": RESNET8_BATCHNORMS}
    assert batchnorm.status_code == 200
    assert sorted(layer["name"] for layer in batchnorm.json()["layers"]) == sorted(RESNET8_BATCHNORMS)
    assert predicted.status_code == 200 and artifact.status_code == 200
    stored = from_artifact(artifact.content, resnet_model["spec"])
    expected = stored.predict(torch.from_numpy(samples).float()).logits.numpy()
    np.testing.assert_allclose(np.array(predicted.json()["outputs"]), expected, rtol=1e-5, atol=1e-5)
    assert np.mean(np.array(predicted.json()["predictions"]) == digits.target[:300]) > 0.8


def test_a_resnets_answer_for_a_sample_does_not_depend_on_its_batch(client: httpx.Client, resnet_model: dict) -> None:
    url = f"/v1/models/{resnet_model['id']}/predict"
    samples = load_digits().data[100:130].reshape(-1, 1, 8, 8)

    together = client.post(url, json={"inputs": samples.tolist()})
    alone = [client.post(url, json={"inputs": [sample.tolist()]}) for sample in samples]

    assert together.status_code == 200 and all(a.status_code == 200 for a in alone)
    np.testing.assert_allclose(
        np.array(together.json()["outputs"]), np.array([a.json()["outputs"][0] for a in alone]), rtol=1e-5, atol=1e-5
    )


def test_the_drift_monitor_of_a_resnet_watches_every_bn_layer(client: httpx.Client, resnet_model: dict) -> None:
    url = f"/v1/models/{resnet_model['id']}"
    shifted = load_digits().data.reshape(-1, 1, 8, 8) * 3 + 5

    assert client.post(f"{url}/predict", json={"inputs": shifted.tolist()}).status_code == 200
    drift = client.get(f"{url}/drift")

    assert drift.status_code == 200
    assert sorted(layer["name"] for layer in drift.json()["layers"]) == sorted(RESNET8_BATCHNORMS)
    assert all(layer["samples"] >= len(shifted) for layer in drift.json()["layers"])
    assert drift.json()["drifted"] is True


def test_the_onnx_download_of_a_resnet_matches_predict(client: httpx.Client, resnet_model: dict) -> None:
    url = f"/v1/models/{resnet_model['id']}"
    samples = load_digits().data[:257].astype(np.float32).reshape(-1, 1, 8, 8)

    exported = client.get(f"{url}/artifact", params={"format": "onnx"})
    predicted = client.post(f"{url}/predict", json={"inputs": samples.tolist()})

    assert exported.status_code == 200 and predicted.status_code == 200
    session = onnxruntime.InferenceSession(exported.content, providers=["CPUExecutionProvider"])
    [logits] = session.run(None, {session.get_inputs()[0].name: samples})
    np.testing.assert_allclose(logits, np.array(predicted.json()["outputs"]), rtol=0, atol=1e-4)


def test_the_training_recipes_curl_example_trains_a_resnet(service: RunningService, client: httpx.Client, tmp_path: Path) -> None:
    page = sh_commands((ROOT / "docs" / "training-recipes.md").read_text())
    commands = [c for c in page if c.startswith("curl ") and '"resnet"' in c]
    assert commands, "docs/training-recipes.md lost its resnet example"
    for command in commands:
        for started in started_jobs(run_command(command, service, tmp_path)):
            job = wait_for(client, started["id"])
            assert job["status"] == "succeeded", job
            assert job["spec"]["model"]["architecture"] == "resnet" and job["spec"]["model"]["zero_init_residual"] is True


def test_a_resnet_trains_on_the_generated_3x32x32_shapes(client: httpx.Client) -> None:
    """shapes32: coloured circles, squares, triangles and crosses, made by code so that nothing downloads.

    One short epoch: on these CPUs learning the shapes takes minutes (a 3-epoch ResNet-8 reaches about 0.8).
    """
    listed = {d["name"]: d for d in client.get("/v1/datasets").json()["items"]}
    assert listed["shapes32"]["input_shape"] == [3, 32, 32] and listed["shapes32"]["num_classes"] == 4
    dataset = load_dataset("shapes32")
    assert np.bincount(dataset.labels).tolist() == [500] * 4
    regenerated, labels = generate_shapes32()
    assert np.array_equal(regenerated.reshape(2000, -1), dataset.features) and np.array_equal(labels, dataset.labels)

    job = train(
        client,
        {
            "model": {"architecture": "resnet", "num_classes": 4, "depth": 8, "width": 4},
            "dataset": {"name": "shapes32"},
            "training": {"epochs": 1, "learning_rate": 0.05},
        },
    )

    assert job["spec"]["model"]["input_shape"] == [3, 32, 32]
    images = regenerated[:5]
    predicted = client.post(f"/v1/models/{job['model_id']}/predict", json={"inputs": images.tolist()})
    assert predicted.status_code == 200 and len(predicted.json()["predictions"]) == 5

"""Training is reproducible: the same job with the same seed gives the same weights and BN statistics."""

import httpx
import numpy as np
import torch
from safetensors.torch import load_file

from bncore.jobs.execution import train_model
from bncore.specs import JobSpec
from tests.support.jobs import figures, job_request, train


def stored_tensors(service, model_id: str) -> dict[str, torch.Tensor]:
    return load_file(service.data_dir / "artifacts" / f"{model_id}.safetensors")


def test_same_seed_same_job_gives_identical_weights(client: httpx.Client, service) -> None:
    body = job_request(training={"epochs": 2, "seed": 7})
    first, second = train(client, body), train(client, body)
    a, b = stored_tensors(service, first["model_id"]), stored_tensors(service, second["model_id"])
    assert a.keys() == b.keys()
    assert {
        "network.bn1.running_mean",
        "network.bn1.running_var",
        "network.bn1.num_batches_tracked",
        "network.bn1.weight",
        "network.bn1.bias",
        "input.mean",
        "input.std",
    } <= a.keys()
    assert "network.fc1.bias" not in a  # the layer feeding BN has no bias
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert list(map(figures, first["metrics"])) == list(map(figures, second["metrics"]))

    other = train(client, job_request(training={"epochs": 2, "seed": 8}))
    assert not torch.equal(a["network.fc1.weight"], stored_tensors(service, other["model_id"])["network.fc1.weight"])


def test_stored_bn_statistics_match_an_in_process_run_of_the_same_spec(client: httpx.Client) -> None:
    """What the worker stored is what this spec trains to, so the BN recomputation test covers it."""
    job = train(client, job_request(training={"epochs": 2, "seed": 5}))
    served = client.get(f"/v1/models/{job['model_id']}/batchnorm").json()["layers"]
    trained, _ = train_model(JobSpec.model_validate(job["spec"]), torch.device("cpu"))
    for layer in served:
        bn = trained.network.get_submodule(layer["name"])
        np.testing.assert_allclose(layer["running_mean"], bn.running_mean.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer["running_var"], bn.running_var.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer["gamma"], bn.weight.detach().numpy(), rtol=1e-5, atol=1e-6)
        assert layer["num_batches_tracked"] == int(bn.num_batches_tracked)

"""A job on two processes with BN over the global batch trains the model one process would; `local` BN does not."""

import subprocess
import sys

import httpx
import numpy as np
import pytest
import torch

from bncore.data.builtin import PreparedData, prepare_data
from bncore.data.catalog import BUILT_INS
from bncore.parent_process import POLL_SECONDS
from bncore.specs import DatasetRef, JobSpec
from bncore.training.data_parallel import Gang, train_data_parallel
from bncore.training.loop import train
from bncore.training.networks import build_network
from tests.support.gangs import kill_rank_1_and_see_the_job_resume
from tests.support.jobs import job_request
from tests.support.jobs import train as train_job
from tests.support.processes import ROOT, process_alive, wait_until_gone

# iris: 120 training samples, batches of 16 → 7 full batches and a trailing 8, split 4 + 4.
SPEC = {
    "model": {"architecture": "mlp", "num_classes": 3, "input_shape": [4], "hidden_sizes": [16, 16]},
    "dataset": {"name": "iris"},
    "training": {"epochs": 6, "batch_size": 16, "learning_rate": 0.05, "seed": 3},
}


def _spec(bn_sync: str | None, processes: int) -> JobSpec:
    spec = JobSpec.model_validate(SPEC)
    model = spec.model.model_copy(update={"bn_sync": bn_sync})
    return spec.model_copy(update={"model": model, "resources": spec.resources.model_copy(update={"processes": processes})})


def _data(spec: JobSpec) -> PreparedData:
    dataset = BUILT_INS.load(DatasetRef(name="iris"))
    return prepare_data(dataset, (4,), spec.training.validation_fraction, spec.training.seed)


def _one_process(spec: JobSpec) -> tuple[dict[str, torch.Tensor], list]:
    torch.manual_seed(spec.training.seed)
    network = build_network(spec.model, (4,), for_training=True)
    result = train(network, _data(spec), spec.training)
    return network.state_dict(), result.history


def _predictions(spec: JobSpec, state: dict[str, torch.Tensor], x: torch.Tensor) -> np.ndarray:
    network = build_network(spec.model, (4,))
    network.load_state_dict(state)
    network.eval()
    with torch.no_grad():
        return torch.softmax(network(x), dim=1).numpy()


@pytest.fixture(scope="module")
def one_process() -> tuple[dict[str, torch.Tensor], list]:
    return _one_process(_spec(None, 1))


def test_two_processes_with_global_bn_train_the_model_one_process_trains(one_process: tuple) -> None:
    spec = _spec("global", 2)
    single_state, single_history = one_process
    state, result = train_data_parallel(spec, _data(spec), Gang(processes=2, run_id="test-global", checkpoint_seconds=0))

    assert len(result.history) == 6
    assert set(state) == set(single_state)
    for name, value in single_state.items():  # weights, γ, β and the running statistics of every BN layer
        np.testing.assert_allclose(state[name].numpy(), value.numpy(), atol=1e-5, err_msg=name)
    x_val = _data(spec).x_val
    np.testing.assert_allclose(_predictions(spec, state, x_val), _predictions(spec, single_state, x_val), atol=1e-5)
    # The epochs' training loss is the global batches' too, summed over both processes.
    for ours, theirs in zip(result.history, single_history, strict=True):
        assert ours.train_loss == pytest.approx(theirs.train_loss, abs=1e-5)
        assert ours.val_loss == pytest.approx(theirs.val_loss, abs=1e-5)


def test_two_processes_with_local_bn_train_a_measurably_different_model(one_process: tuple) -> None:
    spec = _spec("local", 2)
    single_state, _ = one_process
    state, _ = train_data_parallel(spec, _data(spec), Gang(processes=2, run_id="test-local", checkpoint_seconds=0))

    running_mean_gap = (state["bn1.running_mean"] - single_state["bn1.running_mean"]).abs().max().item()
    weight_gap = (state["fc2.weight"] - single_state["fc2.weight"]).abs().max().item()
    assert weight_gap > 1e-3, weight_gap
    assert running_mean_gap > 1e-4, running_mean_gap


DIGIT_ZERO = [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0, 0, 8, 8, 0]
DIGIT_ZERO += [0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0]
SMALL_DIGITS = {"model": {"hidden_sizes": [32, 32]}, "training": {"epochs": 3, "seed": 0, "batch_size": 64}}


def test_a_job_on_two_processes_succeeds_through_the_api_and_serves(client: httpx.Client) -> None:
    job = train_job(client, job_request(**SMALL_DIGITS, resources={"processes": 2}))

    assert job["world_size"] == 2
    assert job["spec"]["model"]["bn_sync"] == "global"  # the default with more than one process
    assert [m["epoch"] for m in job["metrics"]] == [1, 2, 3]
    response = client.post(f"/v1/models/{job['model_id']}/predict", json={"inputs": [DIGIT_ZERO]})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [0]


def test_a_ghost_bn_job_trains_and_serves_folded_like_any_bn_model(client: httpx.Client) -> None:
    ghost = {"hidden_sizes": [32, 32], "virtual_batch_size": 16}
    job = train_job(client, job_request(training=SMALL_DIGITS["training"], model=ghost))

    assert job["world_size"] == 1
    model = client.get(f"/v1/models/{job['model_id']}")
    assert model.status_code == 200, model.text
    assert model.json()["serving"]["folded_layers"] == ["bn1", "bn2"]
    response = client.post(f"/v1/models/{job['model_id']}/predict", json={"inputs": [DIGIT_ZERO]})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [0]
    onnx = client.get(f"/v1/models/{job['model_id']}/artifact", params={"format": "onnx"})
    assert onnx.status_code == 200, onnx.text[:200]


def test_ghost_bn_trains_differently_from_bn_on_the_whole_batch(one_process: tuple) -> None:
    spec = JobSpec.model_validate({**SPEC, "model": {**SPEC["model"], "virtual_batch_size": 4}})
    ghost_state, _ = _one_process(spec)
    single_state, _ = one_process

    assert set(ghost_state) == set(single_state)  # BN's state dict: what serving, folding and ONNX read
    assert (ghost_state["fc2.weight"] - single_state["fc2.weight"]).abs().max().item() > 1e-3
    # One running-statistics update per virtual batch: 30 per epoch of 120 samples, not 8.
    assert ghost_state["bn1.num_batches_tracked"].item() == 6 * 30


def test_killing_one_process_of_a_gang_fails_the_attempt_and_the_job_resumes_from_its_checkpoint(
    client: httpx.Client,
) -> None:
    kill_rank_1_and_see_the_job_resume(client, {"processes": 2})


def test_the_gangs_helper_process_ends_with_a_worker_killed_mid_gang() -> None:
    """A worker killed mid-gang (SIGKILL: no time to shut anything down) leaves no process behind: the manager
    holding the queue its ranks report through ends as soon as it finds itself orphaned."""
    script = "from bncore.training.data_parallel import gang_manager; import time\n"
    script += "manager = gang_manager(); print(manager._process.pid, flush=True); time.sleep(600)\n"
    worker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    manager_pid = int(worker.stdout.readline())
    assert process_alive(manager_pid)

    worker.kill()
    worker.wait()

    assert wait_until_gone(manager_pid, timeout=10 * POLL_SECONDS), "the gang's manager outlived its worker"

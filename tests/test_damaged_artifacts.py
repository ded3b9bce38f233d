"""A model whose weights are missing, damaged or swapped for a pickle is refused; the rest keep serving."""

import contextlib
import os
import pickle

import httpx
import torch

from bncore.storage.artifacts import ArtifactStore
from tests.support.jobs import job_request, train


class PlantedPayload:
    """Unpickling this would create `marker`: the proof that a pickle ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def test_damaged_missing_and_pickled_weights_are_refused_while_others_serve(
    client: httpx.Client, service, digits_model: dict
) -> None:
    artifacts = service.data_dir / "artifacts"
    damaged, missing, pickled = (train(client, job_request(training={"epochs": 1}))["model_id"] for _ in range(3))
    path = artifacts / f"{damaged}.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    (artifacts / f"{missing}.safetensors").unlink()
    marker = service.data_dir / "pickle-ran"
    (artifacts / f"{pickled}.safetensors").write_bytes(pickle.dumps(PlantedPayload(str(marker))))

    for model_id, reason in [(damaged, "sha256"), (missing, "missing"), (pickled, "sha256")]:
        response = client.post(f"/v1/models/{model_id}/predict", json={"inputs": [[0.0] * 64]})
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "artifact_unavailable"
        assert reason in response.json()["error"]["message"]
        assert client.get(f"/v1/models/{model_id}/batchnorm").status_code == 503
    assert not marker.exists()

    healthy = client.post(f"/v1/models/{digits_model['id']}/predict", json={"inputs": [[0.0] * 64]})
    assert healthy.status_code == 200
    assert client.get("/healthz").status_code == 200


def test_a_crash_while_writing_weights_leaves_the_old_file(tmp_path, monkeypatch) -> None:
    """The new file is written beside the old one and renamed over it only when complete."""
    store = ArtifactStore(tmp_path)
    old = {"w": torch.ones(3)}
    sha256 = store.save("model_a", old, {"format": "test"})

    def crash(*args: object) -> None:
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(os, "fsync", crash)
    with contextlib.suppress(KeyboardInterrupt):
        store.save("model_a", {"w": torch.zeros(3)}, {"format": "test"})
    monkeypatch.undo()
    assert torch.equal(store.load("model_a", sha256)["w"], old["w"])
    assert [path.name for path in tmp_path.iterdir()] == ["model_a.safetensors"]

"""Eval-mode BN uses frozen statistics: a sample's answer is the same alone and in any batch."""

import httpx
import numpy as np
from sklearn.datasets import load_digits


def test_fifty_samples_together_equal_the_same_samples_one_by_one(client: httpx.Client, digits_model: dict) -> None:
    url = f"/v1/models/{digits_model['id']}/predict"
    samples = load_digits().data[100:150]
    together = client.post(url, json={"inputs": samples.tolist()})
    assert together.status_code == 200
    alone = [client.post(url, json={"inputs": [sample.tolist()]}).json() for sample in samples]
    np.testing.assert_allclose(
        np.array(together.json()["outputs"]), np.array([a["outputs"][0] for a in alone]), rtol=1e-5, atol=1e-5
    )
    assert together.json()["predictions"] == [a["predictions"][0] for a in alone]


def test_a_batch_of_one_and_a_shuffled_batch_give_the_same_rows(client: httpx.Client, digits_model: dict) -> None:
    url = f"/v1/models/{digits_model['id']}/predict"
    samples = load_digits().data[:20]
    order = np.random.default_rng(0).permutation(20)
    straight = np.array(client.post(url, json={"inputs": samples.tolist()}).json()["outputs"])
    shuffled = np.array(client.post(url, json={"inputs": samples[order].tolist()}).json()["outputs"])
    np.testing.assert_allclose(shuffled, straight[order], rtol=1e-5, atol=1e-5)

"""A user compares BN with plain networks in one experiment and reads the side-by-side table."""

import time
from pathlib import Path

import httpx

from tests.support.jobs import long_job, post_experiment, wait_for
from tests.support.uploads import iris_csv, uploaded

SIGMOID_MLP = {
    "model": {"architecture": "mlp", "num_classes": 10, "activation": "sigmoid", "hidden_sizes": [100, 100, 100]},
    "dataset": {"name": "digits"},
    "training": {"epochs": 3, "seed": 0},
}


def test_bn_against_plain_networks_side_by_side(client: httpx.Client) -> None:
    response = client.post(
        "/v1/experiments",
        json={
            "name": "sigmoid 3x100, as the paper's MNIST figure",
            "base": SIGMOID_MLP,
            "variants": [
                {"name": "batchnorm"},
                {"name": "no-bn", "overrides": {"model": {"normalization": "none"}}},
                {
                    "name": "no-bn relu lr×100",
                    "overrides": {"model": {"normalization": "none", "activation": "relu"}, "training": {"learning_rate": 10}},
                },
            ],
            "target_accuracy": 0.9,
        },
    )
    assert response.status_code == 202
    experiment = response.json()
    assert response.headers["location"] == f"/v1/experiments/{experiment['id']}"
    assert [v["name"] for v in experiment["variants"]] == ["batchnorm", "no-bn", "no-bn relu lr×100"]

    jobs = {v["name"]: wait_for(client, v["job_id"]) for v in experiment["variants"]}
    assert jobs["no-bn"]["spec"]["model"]["normalization"] == "none"
    assert jobs["no-bn"]["spec"]["model"]["activation"] == "sigmoid"
    assert {job["spec"]["training"]["seed"] for job in jobs.values()} == {0}

    table = client.get(f"/v1/experiments/{experiment['id']}").json()
    assert table["status"] == "finished"
    rows = {row["name"]: row for row in table["variants"]}
    assert rows["batchnorm"]["epochs_to_target"] is not None and rows["batchnorm"]["epochs_to_target"] <= 3
    assert rows["batchnorm"]["final_val_accuracy"] > 0.9 and not rows["batchnorm"]["diverged"]
    assert rows["no-bn"]["epochs_to_target"] is None
    assert rows["no-bn"]["final_val_accuracy"] < rows["batchnorm"]["final_val_accuracy"] - 0.3
    assert rows["no-bn relu lr×100"]["diverged"] and rows["no-bn relu lr×100"]["status"] == "failed"
    assert rows["batchnorm"]["best_val_accuracy"] == max(m["val_accuracy"] for m in jobs["batchnorm"]["metrics"])

    plot = client.get(f"/v1/experiments/{experiment['id']}/plot.png")
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
    assert plot.content.startswith(b"\x89PNG\r\n\x1a\n")


def test_a_bad_override_names_the_variant_and_field(client: httpx.Client) -> None:
    typo = [{"name": "ok"}, {"name": "typo", "overrides": {"model": {"normalization": "layernorm"}}}]
    response = post_experiment(client, "typo", SIGMOID_MLP, typo)
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "variants[1].overrides.model.normalization"
    response = post_experiment(client, "mismatch", SIGMOID_MLP, [{"name": "iris", "overrides": {"dataset": {"name": "iris"}}}])
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "variants[0].overrides.model.num_classes"
    duplicate = post_experiment(client, "d", SIGMOID_MLP, [{"name": "a"}, {"name": "a"}])
    assert duplicate.status_code == 422 and "distinct" in duplicate.json()["error"]["message"]
    assert client.get("/v1/experiments/exp_missing").status_code == 404


def test_an_uploaded_dataset_against_the_built_in_one(client: httpx.Client, tmp_path: Path) -> None:
    upload = uploaded(client, iris_csv(tmp_path / "my-iris.csv"))
    response = client.post(
        "/v1/experiments",
        json={
            "name": "my iris export against sklearn's",
            "base": {
                "model": {"architecture": "mlp", "num_classes": 3, "hidden_sizes": [16]},
                "dataset": {"id": upload["id"]},
                "training": {"epochs": 2, "batch_size": 16},
            },
            "variants": [{"name": "uploaded"}, {"name": "built-in", "overrides": {"dataset": {"name": "iris"}}}],
        },
    )
    assert response.status_code == 202, response.text

    jobs = {v["name"]: wait_for(client, v["job_id"]) for v in response.json()["variants"]}
    assert jobs["uploaded"]["spec"]["dataset"] == {"id": upload["id"]}
    assert jobs["built-in"]["spec"]["dataset"] == {"name": "iris"}
    assert {job["status"] for job in jobs.values()} == {"succeeded"}


def test_experiments_are_listed_newest_first_a_page_at_a_time(client: httpx.Client) -> None:
    made = []
    for name in ("first", "second"):
        response = post_experiment(client, name, SIGMOID_MLP | {"training": {"epochs": 1}}, [{"name": "batchnorm"}])
        assert response.status_code == 202, response.text
        made.append(response.json())

    newest = client.get("/v1/experiments", params={"limit": 1}).json()
    assert [e["id"] for e in newest["items"]] == [made[1]["id"]]
    older = client.get("/v1/experiments", params={"limit": 1, "cursor": newest["next_cursor"]}).json()
    assert [e["id"] for e in older["items"]] == [made[0]["id"]]
    wait_for(client, made[1]["variants"][0]["job_id"])
    listed = client.get("/v1/experiments", params={"limit": 1}).json()["items"][0]
    assert listed == client.get(f"/v1/experiments/{made[1]['id']}").json()  # each with its results table

    refused = client.get("/v1/experiments", params={"cursor": "not-a-cursor"})
    assert refused.status_code == 422 and refused.json()["error"]["fields"][0]["field"] == "cursor"


def test_cancelling_an_experiment_stops_every_variant_still_going(client: httpx.Client) -> None:
    seeds = [{"name": "seed 0"}, {"name": "seed 1", "overrides": {"training": {"seed": 1}}}]
    created = post_experiment(client, "too long", long_job(), seeds).json()
    # Either variant may start first: with one worker the other waits queued behind it.
    deadline = time.monotonic() + 180
    while not any(client.get(f"/v1/jobs/{v['job_id']}").json()["status"] == "running" for v in created["variants"]):
        assert time.monotonic() < deadline, "no variant started within 180 s"
        time.sleep(0.2)

    cancelled = client.post(f"/v1/experiments/{created['id']}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["id"] == created["id"]
    jobs = [wait_for(client, variant["job_id"]) for variant in created["variants"]]
    assert [job["status"] for job in jobs] == ["cancelled", "cancelled"]
    assert client.get(f"/v1/experiments/{created['id']}").json()["status"] == "finished"
    again = client.post(f"/v1/experiments/{created['id']}/cancel")
    assert again.status_code == 409 and "every variant's job has ended" in again.json()["error"]["message"]
    assert client.post("/v1/experiments/exp_missing/cancel").status_code == 404

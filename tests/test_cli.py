"""A shell user trains, inspects and uses models with the `bnjobs` command line, run as a real process."""

import json
import os
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import httpx
import numpy as np
import tomllib
from sklearn.datasets import load_digits

from tests.support.jobs import job_request, long_job, submit, train, wait_for
from tests.support.processes import ROOT, free_port, own_service, stop, wait_ready
from tests.support.uploads import iris_csv

IRIS_SPEC = """\
# a small MLP on iris, as a user writes it
model:
  architecture: mlp
  num_classes: 3
  hidden_sizes: [16, 16]
dataset:
  name: iris
training:
  epochs: 3
  batch_size: 16
  learning_rate: 5e-2   # YAML 1.1 would read this as a string
"""
EXPERIMENT_SPEC = """\
name: BN or not on iris
target_accuracy: 0.5
base:
  model: {architecture: mlp, num_classes: 3, hidden_sizes: [16]}
  dataset: {name: iris}
  training: {epochs: 2, batch_size: 16}
variants:
  - name: batchnorm
  - name: no-bn
    overrides: {model: {normalization: none}}
"""


def bnjobs(service, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m bnjobs ARGS` from the repository root, pointed at the service by BNJOBS_URL."""
    env = {**os.environ, "BNJOBS_URL": url or service.url}
    return subprocess.run([sys.executable, "-m", "bnjobs", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def bnjobs_on_file(service, command: str, spec: Path, text: str, *options: str) -> subprocess.CompletedProcess[str]:
    """`bnjobs COMMAND SPEC OPTIONS` once `text` is saved as `spec`, as a user writes a request file and runs it."""
    spec.write_text(text)
    return bnjobs(service, command, str(spec), *options)


def row_of(table: str, key: str) -> list[str]:
    """The cells of the table row that starts with `key`."""
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip("│┃ ").split("│")]
        if cells[0] == key:
            return cells
    raise AssertionError(f"no row {key!r} in:\n{table}")


def test_submit_a_yaml_spec_and_watch_it_train(service, client: httpx.Client, tmp_path: Path) -> None:
    result = bnjobs_on_file(service, "submit", tmp_path / "iris.yaml", IRIS_SPEC, "--watch")
    assert result.returncode == 0, result.stderr

    job_id = result.stdout.splitlines()[0]
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["spec"]["training"]["learning_rate"] == 0.05
    assert "epoch 3/3" in result.stderr and "3/3" in result.stderr.splitlines()[-1]
    for metrics in job["metrics"]:
        cells = row_of(result.stdout, str(metrics["epoch"]))
        figures = [f"{metrics[key]:.4f}" for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")]
        assert cells[1:] == [*figures, f"{metrics['seconds']:.3f}", f"{metrics['learning_rate']:.4g}"]
    assert result.stdout.splitlines()[-1] == f"model: {job['model_id']}"


def test_a_failing_job_exits_1_with_its_error_code_and_message(service, tmp_path: Path) -> None:
    diverges = {
        "model": {"architecture": "mlp", "num_classes": 10, "normalization": "none"},
        "dataset": {"name": "digits"},
        "training": {"epochs": 50, "learning_rate": 10.0},
    }
    result = bnjobs_on_file(service, "submit", tmp_path / "diverges.json", json.dumps(diverges), "--watch")
    assert result.returncode == 1
    job_id = result.stdout.splitlines()[0]
    assert f"error: job {job_id} failed: diverged: " in result.stderr and "Traceback" not in result.stderr


def test_list_show_and_cancel_jobs(service, client: httpx.Client, digits_model: dict, tmp_path: Path) -> None:
    submitted = bnjobs_on_file(service, "submit", tmp_path / "long.json", json.dumps(long_job()))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()

    listing = bnjobs(service, "jobs", "ls", "--limit", "100")
    assert listing.returncode == 0, listing.stderr
    assert row_of(listing.stdout, job_id)[3].endswith("/1000")
    trained = client.get(f"/v1/jobs/{digits_model['job_id']}").json()
    assert row_of(listing.stdout, trained["id"])[1:5] == [
        trained["name"],
        "succeeded",
        "3/3",
        f"{trained['metrics'][-1]['val_accuracy']:.4f}",
    ]

    shown = bnjobs(service, "jobs", "show", trained["id"])
    assert shown.returncode == 0, shown.stderr
    assert ["model", "id", digits_model["id"]] in [line.split() for line in shown.stdout.splitlines()]
    assert row_of(shown.stdout, "3")[4] == f"{trained['metrics'][-1]['val_accuracy']:.4f}"

    cancelled = bnjobs(service, "jobs", "cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.startswith(f"{job_id} ")
    assert wait_for(client, job_id)["status"] == "cancelled"


def test_list_and_show_models(service, client: httpx.Client, digits_model: dict) -> None:
    listing = bnjobs(service, "models", "ls", "--limit", "100")
    assert listing.returncode == 0, listing.stderr
    assert row_of(listing.stdout, digits_model["id"])[1:3] == [digits_model["name"], "digits"]

    shown = bnjobs(service, "models", "show", digits_model["id"])
    assert shown.returncode == 0, shown.stderr
    assert f"{digits_model['parameter_count']:,}" in shown.stdout and digits_model["artifact_sha256"] in shown.stdout
    everything = json.loads(bnjobs(service, "models", "ls", "--json", "-n", "1000").stdout)
    assert [model["id"] for model in everything] == [model["id"] for model in client.get("/v1/models?limit=100").json()["items"]]


def test_delete_a_model(service, client: httpx.Client) -> None:
    model_id = train(client, job_request(training={"epochs": 1}))["model_id"]
    deleted = bnjobs(service, "models", "rm", model_id)
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.strip() == f"{model_id} deleted"
    assert client.get(f"/v1/models/{model_id}").status_code == 404
    again = bnjobs(service, "models", "rm", model_id)
    assert again.returncode == 1 and f"no model with id '{model_id}'" in again.stderr


def test_predict_from_csv_and_npy_equals_the_api(service, client: httpx.Client, digits_model: dict, tmp_path: Path) -> None:
    x = load_digits().data[:40]
    expected = client.post(f"/v1/models/{digits_model['id']}/predict", json={"inputs": x.tolist()}).json()
    with_header = tmp_path / "with_header.csv"
    with_header.write_text(",".join(f"pixel{i}" for i in range(64)) + "\n" + "\n".join(",".join(map(str, row)) for row in x))
    without_header = tmp_path / "rows.csv"
    np.savetxt(without_header, x, delimiter=",")
    array = tmp_path / "rows.npy"
    np.save(array, x)

    classes = bnjobs(service, "predict", digits_model["id"], str(with_header), "--batch-size", "16")
    assert classes.returncode == 0, classes.stderr
    assert [int(line) for line in classes.stdout.split()] == expected["predictions"]
    proba = bnjobs(service, "predict", digits_model["id"], str(without_header), "--proba")
    rows = [[float(p) for p in line.split(",")] for line in proba.stdout.split()]
    np.testing.assert_allclose(rows, expected["probabilities"], rtol=1e-6, atol=1e-9)
    as_json = json.loads(bnjobs(service, "predict", digits_model["id"], str(array), "--json").stdout)
    assert as_json["predictions"] == expected["predictions"]
    np.testing.assert_allclose(as_json["outputs"], expected["outputs"], rtol=1e-6)


def test_bn_table_lists_every_layer_with_the_apis_values(service, client: httpx.Client, digits_model: dict) -> None:
    layers = client.get(f"/v1/models/{digits_model['id']}/batchnorm").json()["layers"]
    summaries = json.loads(bnjobs(service, "bn", digits_model["id"], "--json").stdout)
    assert [s["name"] for s in summaries] == [layer["name"] for layer in layers] == ["bn1", "bn2", "bn3"]
    for summary, layer in zip(summaries, layers, strict=True):
        gamma, beta = np.array(layer["gamma"]), np.array(layer["beta"])
        mean, var = np.array(layer["running_mean"]), np.array(layer["running_var"])
        assert summary["features"] == layer["num_features"] == 100
        np.testing.assert_allclose(
            [summary[k] for k in ("gamma_mean", "gamma_min", "gamma_max", "beta_mean", "beta_min", "beta_max")],
            [gamma.mean(), gamma.min(), gamma.max(), beta.mean(), beta.min(), beta.max()],
            rtol=1e-12,
        )
        np.testing.assert_allclose(
            [
                summary[k]
                for k in ("running_mean_mean", "running_mean_std", "running_var_mean", "running_var_min", "running_var_max")
            ],
            [mean.mean(), mean.std(), var.mean(), var.min(), var.max()],
            rtol=1e-12,
        )

    table = bnjobs(service, "bn", digits_model["id"])
    assert table.returncode == 0, table.stderr
    for layer in layers:
        cells = row_of(table.stdout, layer["name"])
        assert cells[1:3] == ["100", f"{np.mean(layer['gamma']):.4f}"]
        assert cells[-1] == f"{np.max(layer['running_var']):.4f}"


def test_bn_table_shows_group_norm_layers_with_gamma_and_beta_and_no_statistics(service, client: httpx.Client) -> None:
    job = train(client, job_request(model={"hidden_sizes": [32], "normalization": "group_norm"}, training={"epochs": 1}))
    [layer] = client.get(f"/v1/models/{job['model_id']}/batchnorm").json()["layers"]

    listed = bnjobs(service, "bn", job["model_id"], "--json")

    assert listed.returncode == 0, listed.stderr
    [summary] = json.loads(listed.stdout)
    assert summary["kind"] == "group_norm" and summary["running_var_max"] is None
    np.testing.assert_allclose(summary["gamma_mean"], np.mean(layer["gamma"]), rtol=1e-12)
    table = bnjobs(service, "bn", job["model_id"])
    assert table.returncode == 0, table.stderr
    assert row_of(table.stdout, "bn1 (group_norm)")[-1] == "-"


def test_experiment_watch_prints_the_results_table(service, client: httpx.Client, tmp_path: Path) -> None:
    result = bnjobs_on_file(service, "experiment", tmp_path / "experiment.yaml", EXPERIMENT_SPEC, "--watch")
    assert result.returncode == 0, result.stderr

    experiment = client.get(f"/v1/experiments/{result.stdout.splitlines()[0]}").json()
    assert experiment["status"] == "finished" and "finished" in result.stdout
    for variant in experiment["variants"]:
        cells = row_of(result.stdout, variant["name"])
        assert cells[1:4] == [variant["job_id"], variant["status"], f"{variant['final_val_accuracy']:.4f}"]

    later = bnjobs(service, "experiments", "show", experiment["id"])  # e.g. after Ctrl-C stopped the watch
    assert later.returncode == 0, later.stderr
    assert [row_of(later.stdout, v["name"]) for v in experiment["variants"]] == [
        row_of(result.stdout, v["name"]) for v in experiment["variants"]
    ]
    listing = bnjobs(service, "experiments", "ls", "-n", "100")
    assert listing.returncode == 0, listing.stderr
    best = max(experiment["variants"], key=lambda v: v["best_val_accuracy"])
    assert row_of(listing.stdout, experiment["id"])[1:6] == [
        "BN or not on iris",
        "finished",
        "2",
        best["name"],
        f"{best['best_val_accuracy']:.4f}",
    ]
    shown = bnjobs(service, "experiments", "show", experiment["id"], "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == experiment
    listed = bnjobs(service, "experiments", "ls", "--json", "-n", "100")
    assert listed.returncode == 0, listed.stderr
    assert [item for item in json.loads(listed.stdout) if item["id"] == experiment["id"]] == [experiment]
    missing = bnjobs(service, "experiments", "show", "exp_missing")
    assert missing.returncode == 1 and "exp_missing" in missing.stderr


def test_cancel_an_experiment(service, client: httpx.Client) -> None:
    created = client.post(
        "/v1/experiments",
        json={
            "name": "too long",
            "base": long_job(),
            "variants": [{"name": "only"}],
        },
    )
    assert created.status_code == 202, created.text
    experiment_id, job_id = created.json()["id"], created.json()["variants"][0]["job_id"]
    cancelled = bnjobs(service, "experiments", "cancel", experiment_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert row_of(cancelled.stdout, "only")[1] == job_id
    assert wait_for(client, job_id)["status"] == "cancelled"
    again = bnjobs(service, "experiments", "cancel", experiment_id)
    assert again.returncode == 1 and "every variant's job has ended" in again.stderr


def test_a_bad_spec_file_prints_the_apis_field_error_and_exits_1(service, tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    result = bnjobs_on_file(service, "submit", spec, IRIS_SPEC.replace("epochs: 3", "epochs: 0"))
    assert result.returncode == 1
    assert result.stderr.startswith("error: 422 ") and "\n  training.epochs: " in result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr

    result = bnjobs_on_file(service, "submit", spec, "model: [unclosed")
    assert result.returncode == 1 and result.stderr.startswith(f"error: {spec}: not valid YAML")


def test_an_unreachable_url_is_named_in_the_error(service) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = bnjobs(service, "--url", url, "jobs", "ls")
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: could not reach the service at {url} ") and "Traceback" not in result.stderr


def test_serve_starts_the_api_with_its_options(tmp_path: Path) -> None:
    port, data_dir = free_port(), tmp_path / "data"
    log = tmp_path / "serve.log"
    env = {**os.environ, "EMBEDDED_WORKERS": "0"}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "bnjobs", "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, log)
        assert (data_dir / "bnjobs.sqlite3").exists()
    finally:
        stop(process)


def test_a_worker_started_by_bnjobs_trains_the_services_jobs(tmp_path: Path) -> None:
    """An API without workers, and one started with `bnjobs worker --hostname`, as docs/sdk-cli.md shows."""
    env = {"DATA_DIR": str(tmp_path)}
    with own_service(tmp_path, {"EMBEDDED_WORKERS": "0", **env}) as url, httpx.Client(base_url=url, timeout=60) as client:
        job = submit(client, job_request(dataset={"name": "iris"}, model={"num_classes": 3}, training={"epochs": 1}))
        with (tmp_path / "worker.log").open("wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "bnjobs", "worker", "--hostname", "cli-1@%h"],
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            finished = wait_for(client, job["id"], timeout=120)
        finally:
            stop(worker)
    assert finished["status"] == "succeeded", finished
    assert finished["worker"].startswith("cli-1@"), finished["worker"]


def test_the_bnjobs_console_script_is_declared() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entry_point = EntryPoint(name="bnjobs", value=scripts["bnjobs"], group="console_scripts")
    from bnjobs.cli import main

    assert entry_point.load() is main


RESNET_SPEC = """\
# a ResNet-8 on digits as 1×8×8 images, initialised as He et al. do
model:
  architecture: resnet
  num_classes: 10
  input_shape: [1, 8, 8]
  depth: 8
  width: 8
  zero_init_residual: true
  init: kaiming_normal
dataset: {name: digits}
training: {epochs: 2, learning_rate: 0.05}
"""


def test_a_resnet_spec_file_trains_and_its_shortcut_bn_layers_are_listed(service, client: httpx.Client, tmp_path: Path) -> None:
    result = bnjobs_on_file(service, "submit", tmp_path / "resnet.yaml", RESNET_SPEC, "--watch")

    assert result.returncode == 0, result.stderr
    job = client.get(f"/v1/jobs/{result.stdout.splitlines()[0]}").json()
    assert job["status"] == "succeeded"
    assert {"depth": 8, "width": 8, "zero_init_residual": True, "init": "kaiming_normal"}.items() <= job["spec"]["model"].items()
    listed = bnjobs(service, "bn", job["model_id"], "--json")
    assert listed.returncode == 0, listed.stderr
    names = [summary["name"] for summary in json.loads(listed.stdout)]
    assert names == [layer["name"] for layer in client.get(f"/v1/models/{job['model_id']}/batchnorm").json()["layers"]]
    assert {"stage2.0.shortcut.bn", "stage3.0.shortcut.bn"} <= set(names)
    shown = bnjobs(service, "models", "show", job["model_id"])
    assert shown.returncode == 0, shown.stderr
    assert "resnet-8 width=8" in shown.stdout


def test_datasets_are_listed_uploaded_and_removed(service, client: httpx.Client, tmp_path: Path) -> None:
    uploaded = bnjobs(service, "datasets", "upload", str(iris_csv(tmp_path / "flowers.csv")), "--name", "cli-flowers")
    assert uploaded.returncode == 0, uploaded.stderr
    dataset_id = uploaded.stdout.strip()
    assert client.get(f"/v1/datasets/{dataset_id}").json()["name"] == "cli-flowers"

    listing = bnjobs(service, "datasets", "ls")
    assert listing.returncode == 0, listing.stderr
    assert row_of(listing.stdout, "digits")[1:6] == ["-", "builtin", "[64]", "10", "1797"]
    assert row_of(listing.stdout, "cli-flowers")[1:6] == [dataset_id, "upload", "[4]", "3", "150"]

    removed = bnjobs(service, "datasets", "rm", dataset_id)
    assert removed.returncode == 0 and removed.stdout.strip() == f"{dataset_id} deleted"
    assert client.get(f"/v1/datasets/{dataset_id}").status_code == 404
    again = bnjobs(service, "datasets", "rm", dataset_id)
    assert again.returncode == 1 and dataset_id in again.stderr


def test_jobs_and_models_are_listed_by_the_filters_given(service, client: httpx.Client, digits_model: dict) -> None:
    on_digits = json.loads(bnjobs(service, "jobs", "ls", "--json", "--dataset", "digits", "--status", "succeeded").stdout)
    assert digits_model["job_id"] in [job["id"] for job in on_digits]
    assert {(job["status"], job["spec"]["dataset"]["name"]) for job in on_digits} == {("succeeded", "digits")}
    of_job = json.loads(bnjobs(service, "models", "ls", "--json", "--job", digits_model["job_id"]).stdout)
    assert [model["id"] for model in of_job] == [digits_model["id"]]

"""The `bnjobs` commands: each reads its input, makes a few SDK calls and prints a table (or `--json`)."""

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from bnjobs.cli import render
from bnjobs.cli.files import UnreadableFile, read_request, read_rows
from bnjobs.cli.watch import watch_experiment, watch_job
from bnjobs.client import DEFAULT_URL, ApiError, Client, Experiment, Job, ServiceUnreachable
from service.schemas import JobOut, PredictOut

app = typer.Typer(
    name="bnjobs",
    help="Train Batch-Normalization networks as jobs on the BatchNorm job service, and use them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
jobs_app = typer.Typer(help="Training jobs: list, show, cancel.", no_args_is_help=True)
models_app = typer.Typer(help="Trained models: list, show, delete.", no_args_is_help=True)
experiments_app = typer.Typer(help="Experiments started with `bnjobs experiment`: list, show, cancel.", no_args_is_help=True)
datasets_app = typer.Typer(
    help="Datasets: list the built-in ones and uploads, upload a CSV or NPZ, delete an upload.", no_args_is_help=True
)
app.add_typer(jobs_app, name="jobs")
app.add_typer(datasets_app, name="datasets")
app.add_typer(models_app, name="models")
app.add_typer(experiments_app, name="experiments")

JsonFlag = Annotated[bool, typer.Option("--json", help="print the API's JSON instead of a table")]
Limit = Annotated[int, typer.Option("--limit", "-n", min=1, help="at most this many, newest first")]
WatchFlag = Annotated[bool, typer.Option("--watch", "-w", help="follow it until it ends, then print the results")]
DatasetFilter = Annotated[str | None, typer.Option(help="only those on this dataset (a name or an upload's id)")]
RequestFile = Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="a request body as .json, or YAML")]


class Failed(Exception):
    """What the command waited for did not succeed; the message says what happened."""


@dataclass(frozen=True)
class Connection:
    url: str
    api_key: str | None


@app.callback()
def connect(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(envvar="BNJOBS_URL", help="the service's base URL")] = DEFAULT_URL,
    api_key: Annotated[str | None, typer.Option(envvar="BNJOBS_API_KEY", help="sent as a Bearer token")] = None,
) -> None:
    ctx.obj = Connection(url, api_key)


def sdk(ctx: typer.Context) -> Client:
    connection: Connection = ctx.obj
    client = Client(connection.url, connection.api_key)
    ctx.call_on_close(client.close)
    return client


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="HOST: the address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="PORT")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="DATA_DIR: database, artifacts and broker files")] = None,
) -> None:
    """Start the API with its embedded Celery worker(s), as `python -m service` does."""
    for variable, value in (("HOST", host), ("PORT", port), ("DATA_DIR", data_dir)):
        if value is not None:
            os.environ[variable] = str(value)  # read by the settings here and by the worker children
    from service.__main__ import main as run_service  # uvicorn and the app load for this command only

    run_service(["serve"])


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(ctx: typer.Context) -> None:
    """Run one Celery worker process, as `python -m worker` does; further arguments go to it
    (e.g. `--hostname gpu-1@%h`, or `healthcheck`)."""
    from worker.__main__ import main as run_worker

    run_worker(ctx.args)


@app.command()
def submit(
    ctx: typer.Context,
    spec: RequestFile,
    watch: WatchFlag = False,
    as_json: JsonFlag = False,
    idempotency_key: Annotated[str | None, typer.Option(help="a retry with the same key returns the same job")] = None,
) -> None:
    """Submit a training job (the body of POST /v1/jobs) and print its id."""
    job = sdk(ctx).jobs.submit(read_request(spec), idempotency_key)
    if as_json and not watch:
        render.print_json(job.info)
        return
    if not as_json:
        print(job.id, flush=True)
        for warning in job.info.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    if not watch:
        return
    info = follow(job)
    if as_json:
        render.print_json(info)
    else:
        if info.metrics:
            render.console().print(render.metrics_table(info.metrics))
        if info.model_id:
            print(f"model: {info.model_id}")
    if info.status != "succeeded":
        error = f": {info.error.code}: {info.error.message}" if info.error else ""
        raise Failed(f"job {info.id} {info.status}{error}")


def follow(job: Job) -> JobOut:
    try:
        return watch_job(job)
    except KeyboardInterrupt:
        stop(f"stopped watching; job {job.id} goes on (bnjobs jobs show {job.id}, bnjobs jobs cancel {job.id})", 130)


@jobs_app.command("ls")
def list_jobs(
    ctx: typer.Context,
    limit: Limit = 20,
    as_json: JsonFlag = False,
    status: Annotated[str | None, typer.Option(help="only jobs in this state, e.g. failed")] = None,
    dataset: DatasetFilter = None,
    experiment: Annotated[str | None, typer.Option(help="only this experiment's jobs")] = None,
) -> None:
    """Jobs, newest first."""
    jobs = sdk(ctx).jobs.list(limit, status=status, dataset=dataset, experiment=experiment)
    render.show_list(jobs, as_json, render.JOB_COLUMNS)


@jobs_app.command("show")
def show_job(ctx: typer.Context, job_id: str, as_json: JsonFlag = False) -> None:
    """A job's details and its metrics per epoch."""
    info = sdk(ctx).jobs.get(job_id).info
    if as_json:
        render.print_json(info)
        return
    out = render.console()
    out.print(render.job_details(info))
    if info.metrics:
        out.print(render.metrics_table(info.metrics))


@jobs_app.command("activations")
def job_activations(ctx: typer.Context, job_id: str, as_json: JsonFlag = False) -> None:
    """The percentiles of the inputs to each tracked non-linearity over training (training.track_activations)."""
    activations = sdk(ctx).jobs.get(job_id).activations()
    if not as_json and not activations.layers:
        print(f"{job_id} has no activations (submit it with training.track_activations)", file=sys.stderr)
        return
    render.show(activations, as_json, lambda: render.activations_table(activations))


@jobs_app.command("cancel")
def cancel_job(ctx: typer.Context, job_id: str, as_json: JsonFlag = False) -> None:
    """Cancel a queued job, or ask a running one to stop (within a second)."""
    info = sdk(ctx).jobs.get(job_id).cancel()
    if as_json:
        render.print_json(info)
    else:
        print(f"{info.id} {info.status}" + (" (cancel requested)" if info.status == "running" else ""))


@models_app.command("ls")
def list_models(
    ctx: typer.Context,
    limit: Limit = 20,
    as_json: JsonFlag = False,
    dataset: DatasetFilter = None,
    job: Annotated[str | None, typer.Option(help="only the model this job trained")] = None,
) -> None:
    """Trained models, newest first."""
    models = sdk(ctx).models.list(limit, dataset=dataset, job=job)
    render.show_list(models, as_json, render.MODEL_COLUMNS)


@models_app.command("show")
def show_model(ctx: typer.Context, model_id: str, as_json: JsonFlag = False) -> None:
    """A model's spec, final metrics, size and how it is served."""
    info = sdk(ctx).models.get(model_id).info
    render.show(info, as_json, lambda: render.model_details(info))


@models_app.command("rm")
def delete_model(ctx: typer.Context, model_id: str) -> None:
    """Delete a model and its weights; it stops answering predictions."""
    sdk(ctx).models.delete(model_id)
    print(f"{model_id} deleted")


@app.command()
def predict(
    ctx: typer.Context,
    model_id: str,
    inputs: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            help="raw features: a .npy array (flat or shaped rows), or a CSV of one sample per row",
        ),
    ],
    proba: Annotated[bool, typer.Option("--proba", help="print each row's class probabilities")] = False,
    as_json: JsonFlag = False,
    batch_size: Annotated[int, typer.Option(min=1, help="rows per request")] = 1000,
) -> None:
    """The most probable class of each row, one per line."""
    model = sdk(ctx).models.get(model_id)
    rows = read_rows(inputs)  # flat or shaped: the service takes either for an image model, as from curl
    answers = [model.predict_all(rows[start : start + batch_size]) for start in range(0, len(rows), batch_size)]
    answer = PredictOut(
        model_id=model.id,
        outputs=[row for a in answers for row in a.outputs],
        probabilities=[row for a in answers for row in a.probabilities],
        predictions=[label for a in answers for label in a.predictions],
    )
    if as_json:
        render.print_json(answer)
    elif proba:
        print("\n".join(",".join(f"{p:.8g}" for p in row) for row in answer.probabilities))
    else:
        print("\n".join(map(str, answer.predictions)))


@datasets_app.command("ls")
def list_datasets(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """The built-in datasets, then your uploads."""
    datasets = sdk(ctx).datasets.list()
    render.show_list(datasets, as_json, render.DATASET_COLUMNS)


@datasets_app.command("upload")
def upload_dataset(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="a .csv or .npz file")],
    name: Annotated[str | None, typer.Option(help="default: the file's name")] = None,
    label_column: Annotated[str | None, typer.Option(help="CSV: the label column's header or index; default: the last")] = None,
    description: Annotated[str | None, typer.Option()] = None,
    as_json: JsonFlag = False,
) -> None:
    """Upload a dataset and print its id; train on it with `dataset: {id: <id>}`."""
    dataset = sdk(ctx).datasets.upload(file, label_column, name, description)
    if as_json:
        render.print_json(dataset)
    else:
        print(dataset.id)


@datasets_app.command("rm")
def delete_dataset(ctx: typer.Context, dataset_id: str) -> None:
    """Delete an upload; the models trained on it keep serving."""
    sdk(ctx).datasets.delete(dataset_id)
    print(f"{dataset_id} deleted")


@app.command()
def bn(ctx: typer.Context, model_id: str, as_json: JsonFlag = False) -> None:
    """Each BN layer's γ, β and frozen running statistics, summarised over its features (GroupNorm, LayerNorm: γ, β)."""
    layers = sdk(ctx).models.get(model_id).batchnorm().layers
    summaries = [render.layer_summary(layer) for layer in layers]
    if as_json:
        render.print_json(summaries)
    elif not summaries:
        print(f"{model_id} has no normalisation layers (trained with normalization: none)", file=sys.stderr)
    else:
        render.console().print(render.bn_table(model_id, summaries))


@app.command()
def experiment(
    ctx: typer.Context,
    spec: Annotated[
        Path | None,
        typer.Argument(exists=True, dir_okay=False, readable=True, help="a request body as .json, or YAML; or --preset"),
    ] = None,
    preset: Annotated[str | None, typer.Option(help="a reproduction instead of a file, e.g. faster-training")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="with --preset: epochs of every variant")] = None,
    dataset: Annotated[str | None, typer.Option(help="with --preset: a built-in dataset's name, e.g. shapes32")] = None,
    watch: WatchFlag = False,
    as_json: JsonFlag = False,
) -> None:
    """Run variants of one job side by side (the body of POST /v1/experiments) and print the results table;
    with --preset, a reproduction of one of BN's claims and, once it ends, whether the claim held."""
    if (spec is None) == (preset is None):
        raise typer.BadParameter("give a request file or --preset NAME (bnjobs experiments presets lists them)")
    if preset is None and (epochs is not None or dataset is not None):
        raise typer.BadParameter("--epochs and --dataset go with --preset")
    experiments = sdk(ctx).experiments
    handle = experiments.preset(preset, epochs, dataset) if preset else experiments.submit(read_request(spec))  # type: ignore[arg-type]
    if not as_json:
        print(handle.id, flush=True)
    report(handle, watch, as_json)


@experiments_app.command("ls")
def list_experiments(ctx: typer.Context, limit: Limit = 20, as_json: JsonFlag = False) -> None:
    """Experiments, newest first, with each one's best variant."""
    experiments = sdk(ctx).experiments.list(limit)
    render.show_list(experiments, as_json, render.EXPERIMENT_COLUMNS)


@experiments_app.command("presets")
def list_presets(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """The reproductions `bnjobs experiment --preset NAME` runs, and the claim each one judges."""
    found = sdk(ctx).experiments.presets()
    render.show_list(found, as_json, render.PRESET_COLUMNS, title=render.PRESETS_TITLE)


@experiments_app.command("show")
def show_experiment(ctx: typer.Context, experiment_id: str, watch: WatchFlag = False, as_json: JsonFlag = False) -> None:
    """An experiment's results table so far, or once every variant ended with --watch."""
    report(sdk(ctx).experiments.get(experiment_id), watch, as_json)


@experiments_app.command("cancel")
def cancel_experiment(ctx: typer.Context, experiment_id: str, as_json: JsonFlag = False) -> None:
    """Cancel every variant's job that has not ended; running ones stop within a second."""
    info = sdk(ctx).experiments.get(experiment_id).cancel()
    render.show(info, as_json, lambda: render.experiment_table(info))


def report(handle: Experiment, watch: bool, as_json: bool) -> None:
    if watch:
        try:
            watch_experiment(handle)
        except KeyboardInterrupt:
            stop(f"stopped watching; experiment {handle.id} goes on (bnjobs experiments show {handle.id})", 130)
    render.show(handle.info, as_json, lambda: render.experiment_table(handle.info))


def stop(message: str, code: int = 1) -> NoReturn:
    print(f"error: {message}" if code == 1 else message, file=sys.stderr)
    sys.exit(code)


def main() -> None:
    """The console script: the commands, with the service's refusals and unreachable URLs as one-line errors."""
    try:
        app(prog_name="bnjobs")
    except ApiError as error:
        fields = "".join(f"\n  {field['field']}: {field['message']}" for field in error.fields)
        stop(f"{error.status} {error.code}: {error.message}{fields}")
    except ServiceUnreachable as error:
        stop(str(error))
    except (UnreadableFile, Failed) as error:
        stop(str(error))

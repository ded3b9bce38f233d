"""Experiments: variants of one job run side by side, compared in a table and a chart."""

from collections.abc import Callable
from functools import partial

from fastapi import APIRouter, Response

from bncore.errors import QueueUnavailable
from bncore.jobs.experiments import ExperimentBody, cancel_variants, experiment_status, variant_results, variant_specs
from bncore.jobs.presets import presets
from bncore.jobs.reproductions import find_preset, judge_claim, preset_request
from bncore.storage.experiment_store import Experiment
from bncore.storage.job_store import JobRecord, request_sha256
from bncore.training.plots import experiment_curves_png
from service.auth import Trainer
from service.deps import IdempotencyKey, PageQuery, Services, ServicesDep
from service.routes.submission_route import submission_route
from service.schemas import (
    PNG_RESPONSE,
    ClaimOut,
    ExperimentOut,
    ExperimentPage,
    PresetList,
    PresetOut,
    VariantOut,
    error_responses,
)
from service.submissions import enqueue_or_fail, plan_submission

router = APIRouter(prefix="/v1/experiments", tags=["experiments"], responses=error_responses(401, 403, 422))


@submission_route(router, ExperimentOut)
def create_experiment(
    body: ExperimentBody,
    response: Response,
    services: ServicesDep,
    caller: Trainer,
    idempotency_key: IdempotencyKey = None,
) -> ExperimentOut:
    """Run every variant (the base with its `overrides` deep-merged) as a job; the base's seed and data for all.
    Or `{"preset": NAME}` (see GET /v1/experiments/presets), optionally with `epochs` and `dataset`: a
    reproduction of one of BN's claims, whose answer holds the `claim` once every variant ended.

    All or nothing: every variant is planned and every submission counted against the rate limit before
    the experiment and its jobs are stored, in one transaction. With an `Idempotency-Key` header, sending
    the same body again returns the experiment the first request made.
    """
    request_hash = request_sha256(body.model_dump(mode="json"))
    experiment = services.experiments.earlier(caller.owner, idempotency_key, request_hash) if idempotency_key else None
    if experiment is None:
        if body.preset is not None:
            catalog = services.datasets.visible_to(caller.owner_filter)
            request = preset_request(find_preset(body.preset), body.epochs, body.dataset, catalog)
        else:
            request = body.custom()
        specs = variant_specs(request, partial(plan_submission, services=services, caller=caller))
        services.submissions.take(caller.owner, len(specs))
        variants = [(variant.name, spec.model_dump(mode="json")) for variant, spec in zip(request.variants, specs, strict=True)]
        experiment, created = services.experiments.create(
            request.name, request.target_accuracy, variants, caller.owner, request_hash, idempotency_key, body.preset
        )
        if created:
            enqueue_variants(services, experiment, [spec.resources.device for spec in specs])
    response.headers["Location"] = f"/v1/experiments/{experiment.id}"
    return results_table(experiment, services.jobs.get, services)


def enqueue_variants(services: Services, experiment: Experiment, devices: list[str]) -> None:
    """Every variant's job to the queue; if the broker is down, those not yet queued fail with the first."""
    for index, (variant, device) in enumerate(zip(experiment.variants, devices, strict=True)):
        try:
            enqueue_or_fail(services, variant["job_id"], device)
        except QueueUnavailable as error:
            for later in experiment.variants[index + 1 :]:
                services.jobs.fail(later["job_id"], error.code, error.message)
            raise


@router.get("", response_model=ExperimentPage)
def list_experiments(
    services: ServicesDep,
    caller: Trainer,
    requested: PageQuery,
) -> ExperimentPage:
    """Experiments, newest first, each with its side-by-side table."""
    page, next_cursor = services.experiments.page(requested.limit, requested.cursor, caller.owner_filter)
    jobs = services.jobs.get_many([variant["job_id"] for experiment in page for variant in experiment.variants])
    return ExperimentPage(items=[results_table(e, jobs.__getitem__, services) for e in page], next_cursor=next_cursor)


@router.get("/presets", response_model=PresetList)
def list_presets(caller: Trainer) -> PresetList:
    """The reproductions `POST /v1/experiments {"preset": NAME}` runs: each one's experiment and the claim it judges."""
    return PresetList(presets=[PresetOut(**preset.__dict__) for preset in presets().values()])


@router.get("/{experiment_id}", response_model=ExperimentOut, responses=error_responses(404))
def read_experiment(experiment_id: str, services: ServicesDep, caller: Trainer) -> ExperimentOut:
    """The side-by-side table: final and best validation accuracy, epochs to target, divergence."""
    return results_table(services.experiments.get(experiment_id, caller.owner_filter), services.jobs.get, services)


def results_table(experiment: Experiment, job: Callable[[str], JobRecord], services: Services) -> ExperimentOut:
    results = variant_results(experiment, job)
    status = experiment_status(results)
    claim = experiment.claim
    if experiment.preset is not None and claim is None and status == "finished":
        claim = judge_claim(experiment, {v["name"]: job(v["job_id"]) for v in experiment.variants}, services)
        services.experiments.record_claim(experiment.id, claim)
    return ExperimentOut(
        id=experiment.id,
        name=experiment.name,
        created_at=experiment.created_at,
        target_accuracy=experiment.target_accuracy,
        status=status,
        variants=[VariantOut(**result.__dict__) for result in results],
        preset=experiment.preset,
        claim=ClaimOut(**claim) if claim is not None else None,
    )


@router.post("/{experiment_id}/cancel", status_code=202, response_model=ExperimentOut, responses=error_responses(404, 409))
def cancel_experiment(experiment_id: str, services: ServicesDep, caller: Trainer) -> ExperimentOut:
    """Cancel every variant's job that has not ended: a queued one at once, a running one within a second."""
    experiment = services.experiments.get(experiment_id, caller.owner_filter)
    cancel_variants(experiment, services.jobs)
    return results_table(experiment, services.jobs.get, services)


@router.get("/{experiment_id}/plot.png", response_class=Response, responses={**PNG_RESPONSE, **error_responses(404)})
def plot_experiment(experiment_id: str, services: ServicesDep, caller: Trainer) -> Response:
    """Validation curves of every variant on one chart."""
    experiment = services.experiments.get(experiment_id, caller.owner_filter)
    curves = {v["name"]: services.jobs.get(v["job_id"]).metrics for v in experiment.variants}
    png = experiment_curves_png(curves, experiment.name, experiment.target_accuracy)
    return Response(png, media_type="image/png")

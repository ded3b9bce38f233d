"""Experiments: variants of one job run side by side, compared in a table and a chart."""

from collections.abc import Callable

from fastapi import APIRouter, Depends, Response

from bncore.jobs.experiments import Experiment, ExperimentRequest, cancel_variants, experiment_status, variant_specs
from bncore.jobs.planning import plan_job
from bncore.specs import JobSpec
from bncore.storage.job_store import JobRecord
from bncore.training.plots import experiment_curves_png
from service.auth import Trainer
from service.deps import PageCursor, PageLimit, ServicesDep, enqueue_or_fail, require_json
from service.routes.jobs import check_a_worker_can_take
from service.schemas import PNG_RESPONSE, ExperimentOut, ExperimentPage, VariantOut, error_responses

router = APIRouter(prefix="/v1/experiments", tags=["experiments"], responses=error_responses(401, 403, 422))


@router.post(
    "",
    status_code=202,
    response_model=ExperimentOut,
    dependencies=[Depends(require_json)],
    responses=error_responses(413, 415, 429, 503),
)
def create_experiment(request: ExperimentRequest, response: Response, services: ServicesDep, caller: Trainer) -> ExperimentOut:
    """Run every variant (the base with its `overrides` deep-merged) as a job; the base's seed and data for all."""
    settings = services.settings

    def plan(spec: JobSpec) -> JobSpec:
        planned = plan_job(
            spec,
            settings.max_parameters,
            settings.max_sample_epochs,
            settings.job_time_limit_seconds,
            services.datasets.visible_to(caller.owner_filter),
        )
        check_a_worker_can_take(planned, services.known_queues)
        return planned

    specs = variant_specs(request, plan)
    variants = []
    for variant, spec in zip(request.variants, specs, strict=True):
        services.submissions.take(caller.owner)
        job, _ = services.jobs.create(spec.model_dump(mode="json"), caller.owner, name=f"{request.name}/{variant.name}")
        enqueue_or_fail(services, job.id, spec.resources.device)
        variants.append({"name": variant.name, "job_id": job.id})
    experiment = services.experiments.add(request.name, caller.owner, request.target_accuracy, variants)
    response.headers["Location"] = f"/v1/experiments/{experiment.id}"
    return results_table(experiment, services.jobs.get)


@router.get("", response_model=ExperimentPage)
def list_experiments(
    services: ServicesDep,
    caller: Trainer,
    limit: PageLimit = 20,
    cursor: PageCursor = None,
) -> ExperimentPage:
    """Experiments, newest first, each with its side-by-side table."""
    page, next_cursor = services.experiments.page(limit, cursor, caller.owner_filter)
    jobs = services.jobs.get_many([variant["job_id"] for experiment in page for variant in experiment.variants])
    return ExperimentPage(items=[results_table(e, jobs.__getitem__) for e in page], next_cursor=next_cursor)


@router.get("/{experiment_id}", response_model=ExperimentOut, responses=error_responses(404))
def read_experiment(experiment_id: str, services: ServicesDep, caller: Trainer) -> ExperimentOut:
    """The side-by-side table: final and best validation accuracy, epochs to target, divergence."""
    return results_table(services.experiments.get(experiment_id, caller.owner_filter), services.jobs.get)


def results_table(experiment: Experiment, job: Callable[[str], JobRecord]) -> ExperimentOut:
    results = experiment.results(job)
    return ExperimentOut(
        id=experiment.id,
        name=experiment.name,
        created_at=experiment.created_at,
        target_accuracy=experiment.target_accuracy,
        status=experiment_status(results),
        variants=[VariantOut(**result.__dict__) for result in results],
    )


@router.post("/{experiment_id}/cancel", status_code=202, response_model=ExperimentOut, responses=error_responses(404, 409))
def cancel_experiment(experiment_id: str, services: ServicesDep, caller: Trainer) -> ExperimentOut:
    """Cancel every variant's job that has not ended: a queued one at once, a running one within a second."""
    experiment = services.experiments.get(experiment_id, caller.owner_filter)
    cancel_variants(experiment, services.jobs)
    return results_table(experiment, services.jobs.get)


@router.get("/{experiment_id}/plot.png", response_class=Response, responses={**PNG_RESPONSE, **error_responses(404)})
def plot_experiment(experiment_id: str, services: ServicesDep, caller: Trainer) -> Response:
    """Validation curves of every variant on one chart."""
    experiment = services.experiments.get(experiment_id, caller.owner_filter)
    curves = {v["name"]: services.jobs.get(v["job_id"]).metrics for v in experiment.variants}
    png = experiment_curves_png(curves, experiment.name, experiment.target_accuracy)
    return Response(png, media_type="image/png")

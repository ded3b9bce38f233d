"""The dashboard at `/`: one server-rendered page whose script drives the public API.

With API keys configured the page is rendered without data: its script asks for a key, keeps it in the
tab's sessionStorage and sends it as `Authorization: Bearer` on every API call, so the page can show
no more than the key itself could fetch.
"""

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from bncore.data.builtin import list_datasets
from service.deps import ServicesDep
from service.routes.experiments import results_table
from service.schemas import DatasetOut, ExperimentOut, JobOut, ModelOut

PACKAGE_DIR = Path(__file__).resolve().parent.parent
STATIC_DIR = PACKAGE_DIR / "static"
templates = Jinja2Templates(directory=PACKAGE_DIR / "templates")
router = APIRouter(include_in_schema=False)
FIRST_PAGE = 20
# Only the page's own script and styles run: a job or model name that slipped into the markup stays text.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, services: ServicesDep) -> HTMLResponse:
    """Jobs, models, experiments and a form to start a job; the data is in the markup only when the service
    is open, so that the first view needs no second round trip."""
    open_access = not services.api_keys
    jobs: list[JobOut] = []
    models: list[ModelOut] = []
    datasets: list[DatasetOut] = []
    experiments: list[ExperimentOut] = []
    if open_access:
        jobs = [JobOut.from_record(job) for job in services.jobs.page(FIRST_PAGE, None)[0]]
        fold = services.settings.fold_batchnorm
        models = [ModelOut.from_record(model, fold) for model in services.models.page(FIRST_PAGE, None)[0]]
        uploads = services.datasets.uploads.list(None) if services.datasets.uploads else []
        datasets = [DatasetOut.from_info(info) for info in list_datasets()] + [DatasetOut.from_record(r) for r in uploads]
        page = services.experiments.page(FIRST_PAGE, None)[0]
        variant_jobs = services.jobs.get_many([v["job_id"] for experiment in page for v in experiment.variants])
        experiments = [results_table(experiment, variant_jobs.__getitem__, services) for experiment in page]
    # An upload is shown by its name, not its id: the id is on hover.
    dataset_names = {dataset.id: dataset.name for dataset in datasets if dataset.id}
    response = templates.TemplateResponse(
        request,
        "dashboard.html",
        {
            "open_access": open_access,
            "jobs": jobs,
            "models": models,
            "datasets": datasets,
            "experiments": experiments,
            "dataset_names": dataset_names,
            "best_models": best_models(models),
        },
    )
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Cache-Control"] = "no-store"
    return response


def best_models(models: list[ModelOut]) -> set[str]:
    """The ids of the models with the highest validation accuracy of each dataset (as the script marks them)."""
    best: dict[str, ModelOut] = {}
    for model in models:
        leader = best.get(model.dataset)
        if leader is None or model.final_metrics.val_accuracy > leader.final_metrics.val_accuracy:
            best[model.dataset] = model
    return {model.id for model in best.values()}

"""Prometheus metrics of this API process and, read from the database, of the jobs of every worker."""

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.auth import require
from service.schemas import error_responses

router = APIRouter(tags=["operations"])
Operator = require("admin")

EXAMPLE = """# HELP bnjobs_jobs jobs in each state, all workers (from the database)
# TYPE bnjobs_jobs gauge
bnjobs_jobs{state="queued"} 0.0
bnjobs_jobs{state="running"} 1.0
bnjobs_jobs{state="succeeded"} 12.0
"""
METRICS_RESPONSE = {
    200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"example": EXAMPLE}}, "description": "Prometheus text format"}
}


@router.get("/metrics", response_class=Response, responses={**METRICS_RESPONSE, **error_responses(401, 403)})
def read_metrics(request: Request, operator: Operator) -> Response:
    """For Prometheus; with API keys configured, it needs a key with the `admin` scope (a bearer token)."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

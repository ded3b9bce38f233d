"""Liveness and readiness probes."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.deps import ServicesDep
from service.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(services: ServicesDep) -> JSONResponse:
    """The database, the broker and the artifact store are reachable (503 otherwise)."""
    checks = {
        "database": services.database.reachable(),
        "broker": services.broker_reachable(),
        "artifacts": services.artifacts.writable(),
    }
    ready = all(checks.values())
    body = Readiness(status="ready" if ready else "unready", checks=checks)
    return JSONResponse(status_code=200 if ready else 503, content=body.model_dump())

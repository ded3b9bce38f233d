"""The baselines of row 11, as separate servers on loopback.

`python -m bench.ceiling_apps raw PORT`: a raw ASGI app answering every request with a constant, the
ceiling of Python HTTP here. `python -m bench.ceiling_apps async MODEL.safetensors PORT`: the predict
endpoint a competent user writes, FastAPI `async def` with one torch thread (the forward pass on the
event loop), same model and body shape as bench/minimal_endpoint.py (the sync one).
"""

import sys

import torch
import uvicorn
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from bench.minimal_endpoint import PredictIn
from bench.minimal_endpoint import create_app as create_sync_app

ANSWER = b'{"predictions":[0]}'


async def constant_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


def create_async_app(artifact: str) -> FastAPI:
    torch.set_num_threads(1)
    sync_app = create_sync_app(artifact)  # its model, loaded and standardised as the service does
    predict_sync = next(route.endpoint for route in sync_app.routes if getattr(route, "path", "") == "/predict")
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.post("/predict")
    async def predict(body: PredictIn) -> dict:
        return predict_sync(body)

    return app


if __name__ == "__main__":
    kind, *args = sys.argv[1:]
    app = constant_app if kind == "raw" else create_async_app(args[0])
    uvicorn.run(app, host="127.0.0.1", port=int(args[-1]), log_level="warning", access_log=False)

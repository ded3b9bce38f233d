"""The baseline for serving: the smallest FastAPI app that answers predict with the same torch model.

No batching, no folding, no database, no drift monitor, no auth: `python -m bench.minimal_endpoint
MODEL.safetensors PORT` loads the stored (unfolded) network and standardises the inputs as the
service does, then answers POST /predict with the same body shape.
"""

import sys

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from safetensors import safe_open
from safetensors.torch import load_file

from bncore.training.trained_model import TrainedModel, spec_from_metadata


class PredictIn(BaseModel):
    inputs: list[list[float]]


def create_app(artifact: str) -> FastAPI:
    with safe_open(artifact, "pt") as handle:
        spec = spec_from_metadata(handle.metadata())
    model = TrainedModel.from_tensors(spec, load_file(artifact))
    network, mean, std = model.network.eval(), model.input_mean, model.input_std
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.post("/predict")
    def predict(body: PredictIn) -> dict:
        with torch.inference_mode():
            logits = network((torch.tensor(body.inputs) - mean) / std)
            probabilities = logits.softmax(dim=1)
        return {
            "outputs": logits.tolist(),
            "probabilities": probabilities.tolist(),
            "predictions": probabilities.argmax(dim=1).tolist(),
        }

    return app


if __name__ == "__main__":
    uvicorn.run(create_app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]))

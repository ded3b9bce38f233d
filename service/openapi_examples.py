"""What /docs shows for each operation: a request and its answer, taken from a real run (iris, 2 epochs).

Keyed by (method, path template). tests/test_openapi_examples.py checks that every operation has its
examples and that each one validates against the schema it illustrates.
"""

import json
from typing import Any

from bncore.jobs.presets import presets

JOB_ID = "job_05acec991d6c48529fd394049e15fcb0"
MODEL_ID = "model_cffbd732a92a44ce91ed66c62ceba964"
EXPERIMENT_ID = "exp_daaeb090d0bb4175be35bc0655779658"
DATASET_ID = "ds_5b0e8a3cf1d24c6f9e7a21b4c8d0f3a2"

PARAMETERS: dict[str, Any] = {
    "job_id": JOB_ID,
    "model_id": MODEL_ID,
    "experiment_id": EXPERIMENT_ID,
    "dataset_id": DATASET_ID,
    "limit": 20,
    "cursor": "MjAyNi0xMS0yNVQxNDozNzo1NS43MjMwNTd8am9iXzA1YWNlYzk5",
    "format": "onnx",
    "idempotency-key": "7f1c2e9a-retry-safe-submission",
    "status": "failed",
    "dataset": "digits",
    "experiment": EXPERIMENT_ID,
    "job": JOB_ID,
}

JOB_REQUEST = {
    "model": {"architecture": "mlp", "num_classes": 3, "hidden_sizes": [4]},
    "dataset": {"name": "iris"},
    "training": {"epochs": 2, "learning_rate": 0.05},
}
SPEC = {
    "model": {
        "architecture": "mlp",
        "num_classes": 3,
        "input_shape": [4],
        "hidden_sizes": [4],
        "channels": [16, 32],
        "kernel_size": 3,
        "activation": "relu",
        "normalization": "batchnorm",
        "bn_position": "before_activation",
        "bn_momentum": 0.1,
        "bn_eps": 1e-05,
    },
    "dataset": {"name": "iris"},
    "training": {
        "epochs": 2,
        "batch_size": 64,
        "optimizer": "sgd",
        "learning_rate": 0.05,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "seed": 0,
        "validation_fraction": 0.2,
        "mixed_precision": False,
        "time_limit_seconds": None,
        "schedule": {"kind": "constant", "milestones": [0.5, 0.75], "gamma": 0.1, "min_lr": 0.0, "warmup_epochs": 0},
        "augmentation": None,
        "label_smoothing": 0.0,
        "grad_clip_norm": None,
        "early_stopping": None,
    },
    "resources": {"device": "any"},
}
METRICS = [
    {
        "epoch": 1,
        "train_loss": 1.2957,
        "train_accuracy": 0.3083,
        "val_loss": 1.0752,
        "val_accuracy": 0.4333,
        "seconds": 0.0041,
        "learning_rate": 0.05,
    },
    {
        "epoch": 2,
        "train_loss": 1.1735,
        "train_accuracy": 0.3083,
        "val_loss": 1.0414,
        "val_accuracy": 0.5333,
        "seconds": 0.0018,
        "learning_rate": 0.05,
    },
]
FINAL_METRICS = {name: value for name, value in METRICS[-1].items() if name != "seconds"}
QUEUED_JOB = {
    "id": JOB_ID,
    "name": "mlp-4-bn-iris",
    "status": "queued",
    "created_at": "2026-11-25T14:37:55.723057Z",
    "started_at": None,
    "finished_at": None,
    "progress": {"epoch": 0, "epochs": 2},
    "metrics": [],
    "model_id": None,
    "error": None,
    "device": None,
    "worker": None,
    "attempts": 0,
    "resumed_from_epoch": None,
    "best_epoch": None,
    "cancel_requested": False,
    "spec": SPEC,
    "recalibration": None,
}
SUCCEEDED_JOB = QUEUED_JOB | {
    "status": "succeeded",
    "started_at": "2026-11-25T14:38:01.364524Z",
    "finished_at": "2026-11-25T14:38:10.116530Z",
    "progress": {"epoch": 2, "epochs": 2},
    "metrics": METRICS,
    "model_id": MODEL_ID,
    "device": "cpu",
    "worker": "celery@vm",
    "attempts": 1,
}
CANCELLED_JOB = SUCCEEDED_JOB | {
    "status": "running",
    "finished_at": None,
    "progress": {"epoch": 1, "epochs": 2},
    "metrics": METRICS[:1],
    "model_id": None,
    "cancel_requested": True,
}
RECALIBRATION_JOB = QUEUED_JOB | {
    "id": "job_4ddc5ea781044b0e88ff61e726cf8fbd",
    "name": "mlp-4-bn-iris-recalibrated",
    "progress": {"epoch": 0, "epochs": 0},
    "recalibration": {"dataset": None, "max_samples": 100, "parent_model_id": MODEL_ID},
}
MODEL = {
    "id": MODEL_ID,
    "name": "mlp-4-bn-iris",
    "job_id": JOB_ID,
    "created_at": "2026-11-25T14:38:10.102929Z",
    "spec": SPEC,
    "dataset": "iris",
    "input_shape": [4],
    "num_classes": 3,
    "final_metrics": FINAL_METRICS,
    "parameter_count": 39,
    "artifact_sha256": "08c77407869c1a8b1a7b6723eb4bdfdfae8028b0d1e6b9f719746690cb43cbb0",
    "parent_id": None,
    "serving": {"folded": True, "folded_layers": ["bn1"]},
}
BATCHNORM = {
    "model_id": MODEL_ID,
    "layers": [
        {
            "name": "bn1",
            "num_features": 4,
            "eps": 1e-05,
            "momentum": 0.1,
            "gamma": [1.0288, 0.969, 0.9264, 0.9891],
            "beta": [0.0226, -0.0204, -0.0583, -0.0073],
            "running_mean": [-0.0016, 0.0005, -0.0006, -0.0006],
            "running_var": [0.9449, 0.6714, 0.7004, 0.8107],
            "num_batches_tracked": 4,
        }
    ],
}
DRIFT = {
    "model_id": MODEL_ID,
    "since": "2026-11-25T14:38:11.288589Z",
    "samples_seen": 150,
    "thresholds": {"mean_shift": 0.5, "variance_ratio_min": 0.5, "variance_ratio_max": 2.0, "min_samples": 100},
    "drifted": False,
    "layers": [{"name": "bn1", "samples": 150, "mean_shift": 0.04, "variance_ratio": 1.06, "drifted": False}],
}
EXPERIMENT_REQUEST = {
    "name": "bn vs none",
    "base": JOB_REQUEST,
    "variants": [{"name": "batchnorm"}, {"name": "no-bn", "overrides": {"model": {"normalization": "none"}}}],
    "target_accuracy": 0.9,
}
EXPERIMENT = {
    "id": EXPERIMENT_ID,
    "name": "bn vs none",
    "created_at": "2026-11-25T14:38:11.751479Z",
    "target_accuracy": 0.9,
    "status": "finished",
    "variants": [
        {
            "name": "batchnorm",
            "job_id": "job_c7853d1ccb8a4a549470eddde100ad29",
            "status": "succeeded",
            "final_val_accuracy": 0.7,
            "best_val_accuracy": 0.7,
            "epochs_to_target": None,
            "diverged": False,
        },
        {
            "name": "no-bn",
            "job_id": "job_622f845f6cec49f284cd4528685fe76b",
            "status": "succeeded",
            "final_val_accuracy": 0.5,
            "best_val_accuracy": 0.5,
            "epochs_to_target": None,
            "diverged": False,
        },
    ],
}
EVENTS = "".join(
    f"event: {kind}\ndata: {data}\n\n"
    for kind, data in [
        ("status", '{"status": "running", "attempts": 1}'),
        ("epoch", json.dumps(METRICS[0])),
        ("status", '{"status": "succeeded", "attempts": 1}'),
        ("end", '{"id": "' + JOB_ID + '", "status": "succeeded", "…": "the finished job, as GET /v1/jobs/{job_id}"}'),
    ]
)

# POST /v1/jobs has its examples on the route (service.schemas.JOB_EXAMPLES).
IRIS_CSV = (
    "sepal_length,sepal_width,petal_length,petal_width,species\n5.1,3.5,1.4,0.2,0\n4.9,3,1.4,0.2,0\n"
    "4.7,3.2,1.3,0.2,0\n4.6,3.1,1.5,0.2,0\n7,3.2,4.7,1.4,1\n6.4,3.2,4.5,1.5,1\n6.9,3.1,4.9,1.5,1\n"
    "5.5,2.3,4,1.3,1\n6.3,3.3,6,2.5,2\n5.8,2.7,5.1,1.9,2\n7.1,3,5.9,2.1,2\n6.3,2.9,5.6,1.8,2\n"
)
BUILTIN_DATASET = {
    "name": "iris",
    "description": "Iris flowers: 4 measurements, 3 species (scikit-learn)",
    "input_shape": [4],
    "num_classes": 3,
    "num_samples": 150,
    "source": "builtin",
    "id": None,
    "sha256": None,
    "format": None,
    "created_at": None,
}
UPLOADED_DATASET = {
    "name": "my iris",
    "description": "",
    "input_shape": [4],
    "num_classes": 3,
    "num_samples": 12,
    "source": "upload",
    "id": DATASET_ID,
    "sha256": "4c1f0b8e2d7a9c3e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6",
    "format": "csv",
    "created_at": "2026-11-25T15:02:41.118204Z",
}

ACTIVATIONS = {
    "layers": [
        {
            "name": "act3",
            "steps": [0, 50, 100],
            "p15": [-1.04, -1.12, -1.15],
            "p50": [0.01, -0.02, -0.03],
            "p85": [1.03, 1.08, 1.1],
            "mean": [0.0, -0.02, -0.03],
            "std": [1.0, 1.06, 1.09],
        }
    ]
}


def _presets() -> dict[str, Any]:
    """The first real preset file, so that the example is what the service lists."""
    return {"presets": [preset.__dict__ for preset in list(presets().values())[:1]]}


REQUESTS: dict[tuple[str, str], Any] = {
    ("POST", "/v1/datasets"): {"file": IRIS_CSV, "label_column": "species", "name": "my iris"},
    ("POST", "/v1/models/{model_id}/predict"): {"inputs": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]},
    ("POST", "/v1/models/{model_id}/recalibrate"): {"max_samples": 100},
    ("POST", "/v1/experiments"): EXPERIMENT_REQUEST,
}
RESPONSES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/jobs"): QUEUED_JOB,
    ("GET", "/v1/jobs"): {"items": [SUCCEEDED_JOB], "next_cursor": None},
    ("GET", "/v1/jobs/{job_id}"): SUCCEEDED_JOB,
    ("POST", "/v1/jobs/{job_id}/cancel"): CANCELLED_JOB,
    ("GET", "/v1/jobs/{job_id}/events"): EVENTS,
    ("GET", "/v1/models"): {"items": [MODEL], "next_cursor": None},
    ("GET", "/v1/models/{model_id}"): MODEL,
    ("GET", "/v1/models/{model_id}/batchnorm"): BATCHNORM,
    ("POST", "/v1/models/{model_id}/predict"): {
        "model_id": MODEL_ID,
        "outputs": [[0.0944, -0.0827, -0.3174], [-0.2113, 0.0452, 0.3018]],
        "probabilities": [[0.4, 0.3351, 0.2649], [0.2691, 0.3477, 0.3832]],
        "predictions": [0, 2],
    },
    ("GET", "/v1/models/{model_id}/drift"): DRIFT,
    ("POST", "/v1/models/{model_id}/recalibrate"): RECALIBRATION_JOB,
    ("GET", "/v1/models/{model_id}/serving"): {
        "model_id": MODEL_ID,
        "max_batch_size": 64,
        "max_queue_delay_ms": 2.0,
        "batching": True,
        "requests": 120,
        "rows": 120,
        "forward_passes": 37,
        "largest_batch_rows": 9,
    },
    ("POST", "/v1/experiments"): EXPERIMENT
    | {
        "status": "queued",
        "variants": [
            variant | {"status": "queued", "final_val_accuracy": None, "best_val_accuracy": None}
            for variant in EXPERIMENT["variants"]
        ],
    },
    ("GET", "/v1/experiments"): {"items": [EXPERIMENT], "next_cursor": None},
    ("GET", "/v1/experiments/presets"): _presets(),
    ("GET", "/v1/jobs/{job_id}/activations"): ACTIVATIONS,
    ("GET", "/v1/experiments/{experiment_id}"): EXPERIMENT,
    ("POST", "/v1/experiments/{experiment_id}/cancel"): EXPERIMENT
    | {
        "status": "running",
        "variants": [
            EXPERIMENT["variants"][0] | {"status": "running"},  # asked to stop: cancelled within a second
            EXPERIMENT["variants"][1] | {"status": "cancelled", "final_val_accuracy": None, "best_val_accuracy": None},
        ],
    },
    ("GET", "/v1/datasets"): {"items": [BUILTIN_DATASET, UPLOADED_DATASET]},
    ("POST", "/v1/datasets"): UPLOADED_DATASET,
    ("GET", "/v1/datasets/{dataset_id}"): UPLOADED_DATASET,
    ("GET", "/healthz"): {"status": "ok"},
    ("GET", "/readyz"): {"status": "ready", "checks": {"database": True, "broker": True, "artifacts": True}},
}

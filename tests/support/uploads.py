"""Files a user uploads as datasets, and the upload itself."""

from pathlib import Path

import httpx
from sklearn.datasets import load_iris

IRIS_HEADER = ["sepal_length", "sepal_width", "petal_length", "petal_width", "species"]


def iris_csv(path: Path, header: bool = True, label_first: bool = False) -> Path:
    """Iris as a CSV with the species (0, 1, 2) last, or first."""
    features, labels = load_iris(return_X_y=True)
    lines = [",".join(IRIS_HEADER)] if header else []
    for row, label in zip(features, labels, strict=True):
        cells = [f"{value:g}" for value in row]
        lines.append(",".join([str(label), *cells] if label_first else [*cells, str(label)]))
    if label_first and header:
        lines[0] = ",".join([IRIS_HEADER[-1], *IRIS_HEADER[:-1]])
    path.write_text("\n".join(lines) + "\n")
    return path


def upload(client: httpx.Client, path: Path, **fields: str) -> httpx.Response:
    with path.open("rb") as file:
        return client.post("/v1/datasets", files={"file": (path.name, file)}, data=fields)


def uploaded(client: httpx.Client, path: Path, **fields: str) -> dict:
    response = upload(client, path, **fields)
    assert response.status_code == 201, response.text
    return response.json()

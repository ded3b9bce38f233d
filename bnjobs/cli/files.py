"""What the commands read from disk: job and experiment requests, and rows of raw features."""

import csv
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import yaml


class UnreadableFile(Exception):
    """A file the command cannot use; the message names the file and what is wrong with it."""


class SpecLoader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, where `1e-3` is a string; a spec means the number, as JSON and YAML 1.2 do."""


SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789.")
)


def read_request(path: Path) -> dict[str, Any]:
    """A request body from a .json file, or from YAML (any other name)."""
    text = path.read_text()
    try:
        body = json.loads(text) if path.suffix.lower() == ".json" else yaml.load(text, Loader=SpecLoader)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise UnreadableFile(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {error}") from None
    if not isinstance(body, dict):
        raise UnreadableFile(f"{path}: expected a mapping of fields (model, dataset, ...), got {type(body).__name__}")
    return body


def read_rows(path: Path) -> np.ndarray:
    """Samples from a .npy array (first axis: samples) or a CSV of one sample per row, with or without a header."""
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise UnreadableFile(f"{path}: not a numeric .npy array: {error}") from None
        if array.dtype.kind not in "biuf":
            raise UnreadableFile(f"{path}: expected numbers, got an array of {array.dtype}")
        return array.astype(np.float64).reshape(1, -1) if array.ndim == 1 else array.astype(np.float64)
    return _csv_rows(path)


def _csv_rows(path: Path) -> np.ndarray:
    with path.open(newline="") as file:
        lines = [(number, row) for number, row in enumerate(csv.reader(file), start=1) if row]
    if lines and not _numeric(lines[0][1]):
        lines = lines[1:]  # a header
    if not lines:
        raise UnreadableFile(f"{path}: no rows of numbers")
    rows = []
    for number, row in lines:
        if not _numeric(row):
            raise UnreadableFile(f"{path}, line {number}: expected numbers separated by commas, got {','.join(row)[:80]!r}")
        rows.append([float(cell) for cell in row])
    if len({len(row) for row in rows}) > 1:
        raise UnreadableFile(f"{path}: rows have different numbers of columns")
    return np.asarray(rows, dtype=np.float64)


def _numeric(row: list[str]) -> bool:
    try:
        [float(cell) for cell in row]
    except ValueError:
        return False
    return True

"""Experiment presets: one reproduction of a claim each, stored as data, one YAML file per preset.

A file holds the experiment request (`name`, `base`, `variants`, `target_accuracy`) and a claim: its
`statement`, the `kind` of evaluator that judges it (bncore.jobs.claims.EVALUATORS) and the evaluator's
`params`. Adding a preset is adding a file (and, for a new kind of claim, an evaluator).
"""

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    paper: str  # what the paper (or the seed) says
    request: dict[str, Any]  # a POST /v1/experiments body
    claim: dict[str, Any]  # {"kind", "statement", "params"}


@cache
def presets() -> dict[str, Preset]:
    """Every preset, by name (the file's name without .yaml), in alphabetical order."""
    found = {}
    for file in sorted(resources.files(__package__).iterdir(), key=lambda f: f.name):
        if file.name.endswith(".yaml"):
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
            name = file.name.removesuffix(".yaml")
            found[name] = Preset(name, data["description"], data["paper"], data["request"], data["claim"])
    return found

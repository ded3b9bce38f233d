"""Claim evaluators: from the finished variants of a preset's experiment, the numbers that bear on one of
the paper's claims and whether it held.

One evaluator per claim kind; a preset (bncore/jobs/presets/*.yaml) names its kind and the variants and
thresholds the evaluator reads in `params`. An evaluator returns its evidence and a verdict; diverged or
unfinished variants are evidence too (their accuracy counts as None, never as a number they did not reach).
"""

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bncore.data.builtin import PreparedData
from bncore.training.epoch_metrics import EpochMetrics
from bncore.training.trained_model import TrainedModel


@dataclass(frozen=True)
class VariantOutcome:
    """What an evaluator reads of one variant's job."""

    metrics: list[EpochMetrics]
    status: str  # the job's: succeeded, failed, cancelled...
    diverged: bool
    steps_per_epoch: int
    # The trained model and the data it was trained on (standardised), loaded only by the claims that need them.
    trained: Callable[[], tuple[TrainedModel, PreparedData]] | None = None

    @property
    def final_accuracy(self) -> float | None:
        """The last epoch's validation accuracy of a job that succeeded; None otherwise."""
        return self.metrics[-1].val_accuracy if self.status == "succeeded" and self.metrics else None

    def epochs_to(self, target: float) -> int | None:
        return next((m.epoch for m in self.metrics if m.val_accuracy >= target), None)


@dataclass(frozen=True)
class Verdict:
    held: bool
    evidence: dict[str, Any]


Outcomes = Mapping[str, VariantOutcome]
Evaluator = Callable[[Outcomes, Mapping[str, Any], float | None], Verdict]


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def faster(outcomes: Outcomes, params: Mapping[str, Any], target: float | None) -> Verdict:
    """Held when `fast` reaches the target in fewer optimisation steps than `slow` (never reaching it: infinitely many)."""
    assert target is not None, "a `faster` claim needs the request's target_accuracy"
    evidence: dict[str, Any] = {"target_accuracy": target}
    steps: dict[str, float] = {}
    for role in ("fast", "slow"):
        outcome = outcomes[params[role]]
        epochs = outcome.epochs_to(target)
        evidence[f"{role}_epochs_to_target"] = epochs
        evidence[f"{role}_steps_to_target"] = None if epochs is None else epochs * outcome.steps_per_epoch
        evidence[f"{role}_final_accuracy"] = _rounded(outcome.final_accuracy)
        steps[role] = math.inf if epochs is None else epochs * outcome.steps_per_epoch
    return Verdict(steps["fast"] < steps["slow"], evidence)


def higher_rates(outcomes: Outcomes, params: Mapping[str, Any], target: float | None) -> Verdict:
    """Held when BN at the highest rate did not diverge and ends more accurate than plain at that rate."""
    evidence: dict[str, Any] = {"multipliers": list(params["multipliers"])}
    for kind in ("batchnorm", "plain"):
        evidence[f"{kind}_final_accuracy"] = [_rounded(outcomes[name].final_accuracy) for name in params[kind]]
        evidence[f"{kind}_diverged"] = [outcomes[name].diverged for name in params[kind]]
    bn, plain = (outcomes[params[kind][-1]] for kind in ("batchnorm", "plain"))
    held = bn.final_accuracy is not None and bn.final_accuracy > (plain.final_accuracy or 0.0)
    return Verdict(held, evidence)


def robust_to_scale(outcomes: Outcomes, params: Mapping[str, Any], target: float | None) -> Verdict:
    """Held when BN's spread of final accuracy across scales is at most `ratio` × plain's; a diverged run scores 0."""
    evidence: dict[str, Any] = {"scales": list(params["scales"])}
    spreads = {}
    for kind in ("batchnorm", "plain"):
        accuracies = [outcomes[name].final_accuracy or 0.0 for name in params[kind]]
        evidence[f"{kind}_final_accuracy"] = [_rounded(a) for a in accuracies]
        spreads[kind] = max(accuracies) - min(accuracies)
        evidence[f"{kind}_spread"] = _rounded(spreads[kind])
    return Verdict(spreads["batchnorm"] <= params["ratio"] * spreads["plain"], evidence)


def regularises(outcomes: Outcomes, params: Mapping[str, Any], target: float | None) -> Verdict:
    """Held when BN validates at least as well as plain with dropout (within `tolerance`) and its train–validation
    gap is no larger than plain's without dropout. Train accuracy is as measured during the last epoch."""
    evidence: dict[str, Any] = {}
    for role in ("batchnorm", "plain", "dropout"):
        outcome = outcomes[params[role]]
        last = outcome.metrics[-1] if outcome.metrics and outcome.status == "succeeded" else None
        evidence[f"{role}_val_accuracy"] = _rounded(last.val_accuracy if last else None)
        evidence[f"{role}_gap"] = _rounded(last.train_accuracy - last.val_accuracy if last else None)
    bn_val, dropout_val = evidence["batchnorm_val_accuracy"], evidence["dropout_val_accuracy"]
    bn_gap, plain_gap = evidence["batchnorm_gap"], evidence["plain_gap"]
    held = (
        bn_val is not None
        and bn_gap is not None
        and bn_val >= (dropout_val or 0.0) - params["tolerance"]
        and (plain_gap is None or bn_gap <= plain_gap)
    )
    return Verdict(held, evidence)


def no_slower(outcomes: Outcomes, params: Mapping[str, Any], target: float | None) -> Verdict:
    """Held when `candidate` reaches the target in no more epochs than `reference`, and reaches it at all."""
    assert target is not None, "a `no_slower` claim needs the request's target_accuracy"
    evidence: dict[str, Any] = {"target_accuracy": target}
    epochs = {}
    for role in ("candidate", "reference"):
        outcome = outcomes[params[role]]
        epochs[role] = outcome.epochs_to(target)
        evidence[f"{role}_epochs_to_target"] = epochs[role]
        evidence[f"{role}_final_accuracy"] = _rounded(outcome.final_accuracy)
    held = epochs["candidate"] is not None and epochs["candidate"] <= (epochs["reference"] or math.inf)
    return Verdict(held, evidence)


def drift(metrics: list[EpochMetrics]) -> dict[str, float]:
    """Per tracked layer: the total movement of its 15th, 50th and 85th percentiles over training, summed over
    the three and divided by the median of their spread (p85 − p15), so that layers and networks compare."""
    records = [record for m in metrics for record in m.activations or []]
    result = {}
    for name in records[0]["layers"] if records else []:
        series = [record["layers"][name][:3] for record in records]
        moved = sum(abs(later[k] - earlier[k]) for earlier, later in itertools.pairwise(series) for k in range(3))
        spreads = sorted(p85 - p15 for p15, _, p85 in series)
        result[name] = moved / max(spreads[len(spreads) // 2], 1e-12)
    return result


def less_drift(outcomes: Outcomes, params: Mapping[str, Any], target: float | None) -> Verdict:
    """Held when the mean over layers of `stable`'s drift is less than `shifting`'s."""
    evidence: dict[str, Any] = {}
    means = {}
    for role in ("stable", "shifting"):
        per_layer = drift(outcomes[params[role]].metrics)
        evidence[f"{role}_drift"] = {name: _rounded(value) for name, value in per_layer.items()}
        means[role] = sum(per_layer.values()) / len(per_layer) if per_layer else math.nan
        evidence[f"{role}_mean_drift"] = _rounded(means[role]) if per_layer else None
        records = [record for m in outcomes[params[role]].metrics for record in m.activations or []]
        if records:
            last_layer = list(records[0]["layers"])[-1]
            evidence[f"{role}_{last_layer}_percentiles_first"] = [_rounded(v) for v in records[0]["layers"][last_layer][:3]]
            evidence[f"{role}_{last_layer}_percentiles_last"] = [_rounded(v) for v in records[-1]["layers"][last_layer][:3]]
    return Verdict(bool(means["stable"] < means["shifting"]), evidence)


def matches(outcomes: Outcomes, params: Mapping[str, Any], target: float | None) -> Verdict:
    """Held when `candidate` ends within `tolerance` of `reference`'s validation accuracy, or above it."""
    names = [params["candidate"], params["reference"], *params.get("others", [])]
    evidence: dict[str, Any] = {f"{name}_final_accuracy": _rounded(outcomes[name].final_accuracy) for name in names}
    candidate, reference = outcomes[params["candidate"]].final_accuracy, outcomes[params["reference"]].final_accuracy
    held = candidate is not None and candidate >= (reference or 0.0) - params["tolerance"]
    return Verdict(held, evidence)


def recovers(outcomes: Outcomes, params: Mapping[str, Any], target: float | None) -> Verdict:
    """Held when `hurt` ends less accurate than `reference` and every one of `remedies` wins back at least
    `fraction` of that loss. Optional: `axis` (label → values, e.g. the batch sizes) and `series` (label → variant
    names along that axis) add accuracy curves to the evidence."""
    accuracy = {name: outcomes[name].final_accuracy for name in (params["reference"], params["hurt"], *params["remedies"])}
    evidence: dict[str, Any] = {label: list(values) for label, values in params.get("axis", {}).items()}
    evidence |= {f"{name}_final_accuracy": _rounded(value) for name, value in accuracy.items()}
    for label, names in params.get("series", {}).items():
        evidence[f"{label}_final_accuracy"] = [_rounded(outcomes[name].final_accuracy) for name in names]
    reference, hurt = accuracy[params["reference"]] or 0.0, accuracy[params["hurt"]] or 0.0
    loss = reference - hurt
    evidence["loss"] = _rounded(loss)
    recovered = {}
    for remedy in params["remedies"]:
        recovered[remedy] = ((accuracy[remedy] or 0.0) - hurt) / loss if loss > 0 else None
        evidence[f"{remedy}_recovered"] = _rounded(recovered[remedy])
    held = loss > 0 and all(share is not None and share >= params["fraction"] for share in recovered.values())
    return Verdict(held, evidence)


def bias_gradients(network: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """The largest |∂loss/∂b| over the biases of layers feeding BN, and the largest |∂loss/∂W| of their weights,
    on one batch in train mode (BN with the batch's statistics, as in training)."""
    network.train()
    network.zero_grad()
    F.cross_entropy(network(inputs), targets).backward()
    biased = [
        module
        for module, following in itertools.pairwise(network.children())
        if isinstance(module, (nn.Linear, nn.Conv2d))
        and module.bias is not None
        and isinstance(following, nn.modules.batchnorm._BatchNorm)
    ]
    bias = max((module.bias.grad.abs().max().item() for module in biased), default=math.nan)
    weight = max((module.weight.grad.abs().max().item() for module in biased), default=math.nan)
    network.zero_grad()
    network.eval()
    return bias, weight


PROBE = 256


def bias_redundant(outcomes: Outcomes, params: Mapping[str, Any], target: float | None) -> Verdict:
    """Held when the largest bias gradient is at most `gradient_tolerance` × the largest weight gradient, and the
    two trained networks predict the same class for at least `prediction_agreement` of the validation split."""
    with_bias, without_bias = outcomes[params["with_bias"]], outcomes[params["without_bias"]]
    if with_bias.trained is None or without_bias.trained is None:
        return Verdict(False, {"missing": "a variant has no trained model"})
    (biased, data), (plain, _) = with_bias.trained(), without_bias.trained()
    bias_grad, weight_grad = bias_gradients(biased.network, data.x_train[:PROBE], data.y_train[:PROBE])
    with torch.inference_mode():
        biased.network.eval()
        plain.network.eval()
        a, b = biased.network(data.x_val), plain.network(data.x_val)
    agreement = (a.argmax(dim=1) == b.argmax(dim=1)).double().mean().item()
    evidence = {
        "max_bias_gradient": bias_grad,
        "max_weight_gradient": weight_grad,
        "max_output_difference": (a - b).abs().max().item(),
        "prediction_agreement": _rounded(agreement, 6),
        "with_bias_final_accuracy": _rounded(with_bias.final_accuracy),
        "without_bias_final_accuracy": _rounded(without_bias.final_accuracy),
    }
    held = bias_grad <= params["gradient_tolerance"] * weight_grad and agreement >= params["prediction_agreement"]
    return Verdict(bool(held), evidence)


EVALUATORS: dict[str, Evaluator] = {
    "faster": faster,
    "higher_rates": higher_rates,
    "robust_to_scale": robust_to_scale,
    "regularises": regularises,
    "no_slower": no_slower,
    "less_drift": less_drift,
    "matches": matches,
    "bias_redundant": bias_redundant,
    "recovers": recovers,
}

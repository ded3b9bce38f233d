"""Each claim's evaluator, on fixed numbers: the verdict a preset's experiment would get from them."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bncore.jobs.claims import EVALUATORS, VariantOutcome, bias_gradients, drift
from bncore.jobs.presets import presets
from bncore.training.epoch_metrics import EpochMetrics


def outcome(*val_accuracies: float, train: float | None = None, status: str = "succeeded", activations=None) -> VariantOutcome:
    metrics = [
        EpochMetrics(epoch, 1.0, train if train is not None else accuracy, 1.0, accuracy, 0.1, 0.1, None)
        for epoch, accuracy in enumerate(val_accuracies, start=1)
    ]
    if activations is not None:
        metrics[0] = EpochMetrics(1, 1.0, 0.5, 1.0, val_accuracies[0], 0.1, 0.1, activations)
    return VariantOutcome(metrics, status, status == "failed", steps_per_epoch=20)


def diverged() -> VariantOutcome:
    return VariantOutcome([], "failed", True, steps_per_epoch=20)


def judge(kind: str, outcomes: dict[str, VariantOutcome], params: dict, target: float | None = None):
    return EVALUATORS[kind](outcomes, params, target)


def test_every_preset_names_an_evaluator_and_its_own_variants() -> None:
    for name, preset in presets().items():
        assert preset.claim["kind"] in EVALUATORS, name
        variants = {variant["name"] for variant in preset.request["variants"]}
        named = [v for v in preset.claim["params"].values() if isinstance(v, str) and not v.replace(".", "").isdigit()]
        assert set(named) <= variants, name


def test_faster_counts_steps_and_never_reaching_is_slowest() -> None:
    verdict = judge("faster", {"bn": outcome(0.8, 0.95), "plain": outcome(0.3, 0.5)}, {"fast": "bn", "slow": "plain"}, 0.9)
    assert verdict.held
    assert verdict.evidence["fast_steps_to_target"] == 40 and verdict.evidence["slow_steps_to_target"] is None
    both = judge("faster", {"bn": outcome(0.8, 0.95), "plain": outcome(0.95, 0.96)}, {"fast": "bn", "slow": "plain"}, 0.9)
    assert not both.held
    neither = judge("faster", {"bn": outcome(0.5), "plain": outcome(0.4)}, {"fast": "bn", "slow": "plain"}, 0.9)
    assert not neither.held


def test_higher_rates_holds_when_bn_trains_where_plain_diverges() -> None:
    params = {"multipliers": [1, 30], "batchnorm": ["bn1", "bn30"], "plain": ["p1", "p30"]}
    held = judge("higher_rates", {"bn1": outcome(0.9), "bn30": outcome(0.85), "p1": outcome(0.9), "p30": diverged()}, params)
    assert held.held and held.evidence["plain_diverged"] == [False, True]
    assert held.evidence["plain_final_accuracy"] == [0.9, None]
    bn_diverged = {"bn1": outcome(0.9), "bn30": diverged(), "p1": outcome(0.9), "p30": diverged()}
    assert not judge("higher_rates", bn_diverged, params).held


def test_robust_to_scale_compares_spreads() -> None:
    params = {"scales": [0.1, 10], "batchnorm": ["b1", "b2"], "plain": ["p1", "p2"], "ratio": 0.5}
    held = judge("robust_to_scale", {"b1": outcome(0.9), "b2": outcome(0.85), "p1": outcome(0.9), "p2": diverged()}, params)
    assert held.held and held.evidence["batchnorm_spread"] == 0.05 and held.evidence["plain_spread"] == 0.9
    close = {"b1": outcome(0.9), "b2": outcome(0.8), "p1": outcome(0.9), "p2": outcome(0.75)}
    assert not judge("robust_to_scale", close, params).held


def test_regularises_reads_validation_accuracy_and_gap() -> None:
    params = {"batchnorm": "bn", "plain": "plain", "dropout": "drop", "tolerance": 0.01}
    outcomes = {"bn": outcome(0.95, train=0.97), "plain": outcome(0.92, train=1.0), "drop": outcome(0.955, train=0.96)}
    verdict = judge("regularises", outcomes, params)
    assert verdict.held and verdict.evidence["batchnorm_gap"] == 0.02 and verdict.evidence["plain_gap"] == 0.08
    overfit = {**outcomes, "bn": outcome(0.95, train=1.0 + 0.04)}
    assert not judge("regularises", overfit, params).held


def test_no_slower_needs_the_candidate_to_reach_the_target() -> None:
    params = {"candidate": "fast", "reference": "base"}
    assert judge("no_slower", {"fast": outcome(0.9, 0.96), "base": outcome(0.9, 0.94, 0.96)}, params, 0.95).held
    assert judge("no_slower", {"fast": outcome(0.96), "base": outcome(0.96)}, params, 0.95).held
    assert not judge("no_slower", {"fast": outcome(0.9, 0.94), "base": outcome(0.96)}, params, 0.95).held


def probes(*percentiles: tuple[float, float, float]) -> list[dict]:
    return [{"step": i, "layers": {"act1": [*p, 0.0, 1.0]}} for i, p in enumerate(percentiles)]


def test_drift_is_the_movement_of_the_percentiles_over_their_spread() -> None:
    moving = outcome(0.9, activations=probes((-1, 0, 1), (0, 1, 2), (1, 2, 3)))
    assert drift(moving.metrics) == {"act1": pytest.approx(6 / 2)}
    steady = outcome(0.9, activations=probes((-1, 0, 1), (-1, 0.1, 1), (-1, 0, 1)))
    verdict = judge("less_drift", {"bn": steady, "plain": moving}, {"stable": "bn", "shifting": "plain"})
    assert verdict.held and verdict.evidence["stable_mean_drift"] == 0.1 and verdict.evidence["shifting_mean_drift"] == 3.0
    assert verdict.evidence["shifting_act1_percentiles_last"] == [1, 2, 3]
    assert not judge("less_drift", {"bn": moving, "plain": steady}, {"stable": "bn", "shifting": "plain"}).held


def test_matches_allows_the_tolerance() -> None:
    params = {"candidate": "selu", "reference": "bn", "tolerance": 0.02, "others": ["relu"]}
    assert judge("matches", {"selu": outcome(0.94), "bn": outcome(0.955), "relu": outcome(0.9)}, params).held
    assert not judge("matches", {"selu": outcome(0.92), "bn": outcome(0.955), "relu": outcome(0.9)}, params).held
    assert not judge("matches", {"selu": diverged(), "bn": outcome(0.955), "relu": outcome(0.9)}, params).held


def test_a_bias_before_bn_gets_no_gradient_in_train_mode_and_one_in_eval_mode() -> None:
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3))
    nn.init.normal_(network[0].bias)
    inputs, targets = torch.randn(32, 5), torch.randint(0, 3, (32,))
    bias, weight = bias_gradients(network, inputs, targets)
    assert weight > 1e-3 and bias <= 1e-6 * weight
    # The same bias with BN's frozen statistics is an ordinary parameter: BN cancels it only in training.
    network.eval()
    F.cross_entropy(network(inputs), targets).backward()
    assert network[0].bias.grad.abs().max().item() > 1e-3 * weight
    assert math.isnan(bias_gradients(nn.Sequential(nn.Linear(5, 3)), inputs, targets)[0])


def test_recovers_needs_a_loss_and_every_remedy_to_win_back_the_fraction() -> None:
    params = {
        "reference": "bn-32",
        "hurt": "bn-2",
        "remedies": ["renorm-2", "gn-2"],
        "fraction": 0.5,
        "axis": {"batch_sizes": [2, 32]},
        "series": {"batchnorm": ["bn-2", "bn-32"]},
    }
    outcomes = {"bn-32": outcome(0.95), "bn-2": outcome(0.55), "renorm-2": outcome(0.9), "gn-2": outcome(0.8)}
    verdict = judge("recovers", outcomes, params)
    assert verdict.held, verdict.evidence
    assert verdict.evidence["loss"] == 0.4 and verdict.evidence["renorm-2_recovered"] == 0.875
    assert verdict.evidence["gn-2_recovered"] == 0.625
    assert verdict.evidence["batch_sizes"] == [2, 32] and verdict.evidence["batchnorm_final_accuracy"] == [0.55, 0.95]
    assert not judge("recovers", {**outcomes, "gn-2": outcome(0.7)}, params).held
    assert not judge("recovers", {**outcomes, "renorm-2": diverged()}, params).held
    unhurt = judge("recovers", {**outcomes, "bn-2": outcome(0.96)}, params)
    assert not unhurt.held and unhurt.evidence["renorm-2_recovered"] is None

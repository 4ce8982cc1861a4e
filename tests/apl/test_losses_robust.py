"""Hill, SPLC, Distribution-Balanced, Two-way: golden cases from the official formulas, the family's rules.

The golden file comes from benchmarks/robust_loss_cases.py (reference ports of the
official codes, differentiated by autograd in float64).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from apl.data import job_split, load_stored_dataset
from apl.losses import (
    ROBUST_LOSS_CLASSES,
    DistributionBalancedLoss,
    HillLoss,
    SPLCLoss,
    TwoWayLoss,
    build_loss,
    distribution_balanced_loss,
    hill_loss,
    set_compile_enabled,
    splc_loss,
    two_way_loss,
)
from apl.metrics import EpochMetrics
from apl.spec import ROBUST_LOSS_PRESETS, Hyperparameters, LossSpec
from apl.training import TrainConfig, TrainerCallback, train

CASES = json.loads((Path(__file__).parent / "data" / "robust_loss_cases.json").read_text())["cases"]
FUNCTIONS: dict[str, Any] = {
    "hill": hill_loss,
    "splc": splc_loss,
    "dbl": distribution_balanced_loss,
    "twoway": two_way_loss,
}
COUNTS = {"label_counts": [30.0, 5.0, 200.0, 1.0, 80.0, 12.0], "num_samples": 400}


def _tensor(rows: list[list[float | None]], dtype: torch.dtype) -> Tensor:
    return torch.tensor([[math.nan if v is None else v for v in row] for row in rows], dtype=dtype)


def _call(case: dict[str, Any], x: Tensor, y: Tensor) -> Tensor:
    kwargs = dict(case["params"])
    if case["loss"] == "dbl":
        kwargs |= {"label_counts": case["label_counts"], "num_samples": case["num_samples"]}
    result: Tensor = FUNCTIONS[case["loss"]](x, y, **kwargs)
    return result


def _value_and_grad(case: dict[str, Any], dtype: torch.dtype) -> tuple[float, Tensor]:
    x = torch.tensor(case["logits"], dtype=dtype, requires_grad=True)
    value = _call(case, x, _tensor(case["targets"], dtype))
    value.backward()
    assert x.grad is not None
    return float(value.detach()), x.grad


def _id(case: dict[str, Any]) -> str:
    return f"{case['loss']}-{case['case']}-{json.dumps(case['params'], sort_keys=True)}"


def test_the_golden_file_covers_every_loss_and_case() -> None:
    assert {case["loss"] for case in CASES} == set(ROBUST_LOSS_PRESETS)
    for loss in ROBUST_LOSS_PRESETS:
        names = {case["case"] for case in CASES if case["loss"] == loss}
        assert any("all-negative" in name for name in names) and any("unknown" in name for name in names)
        defaults = [case["params"] for case in CASES if case["loss"] == loss]
        assert any(all(p[k] == v for k, v in ROBUST_LOSS_PRESETS[loss].items() if k in p) for p in defaults)


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_float64_value_and_gradient_equal_the_official_formula(case: dict[str, Any]) -> None:
    value, grad = _value_and_grad(case, torch.float64)
    assert value == pytest.approx(case["value"], rel=1e-6)
    expected = torch.tensor(case["grad"], dtype=torch.float64)
    torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-12)
    unknown = torch.isnan(_tensor(case["targets"], torch.float64))
    assert torch.all(grad[unknown] == 0)


@pytest.mark.parametrize("case", [c for c in CASES if c["case"].startswith("random 16")], ids=_id)
def test_float32_agrees_with_the_official_formula(case: dict[str, Any]) -> None:
    value, grad = _value_and_grad(case, torch.float32)
    assert value == pytest.approx(case["value"], rel=1e-4)
    expected = torch.tensor(case["grad"], dtype=torch.float32)
    torch.testing.assert_close(grad, expected, rtol=1e-3, atol=1e-5)


def _batch(seed: int = 0, shape: tuple[int, int] = (24, 6)) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=gen, dtype=torch.float64) * 3
    targets = (torch.rand(shape, generator=gen, dtype=torch.float64) < 0.3).to(torch.float64)
    targets[:, 0] = 1.0
    return logits, targets


def _modules() -> dict[str, torch.nn.Module]:
    return {
        "hill": HillLoss(),
        "splc": SPLCLoss(),
        "dbl": DistributionBalancedLoss(**COUNTS),  # type: ignore[arg-type]
        "twoway": TwoWayLoss(),
    }


@pytest.mark.parametrize("name", ["hill", "splc"])
def test_unknown_cells_of_an_elementwise_loss_equal_leaving_them_out(name: str) -> None:
    logits, targets = _batch(1)
    targets[torch.rand(targets.shape, generator=torch.Generator().manual_seed(2)) < 0.25] = math.nan
    known = ~torch.isnan(targets)
    fn = FUNCTIONS[name]
    masked_x = logits.clone().requires_grad_()
    masked = fn(masked_x, targets)
    masked.backward()
    alone_x = logits.clone().requires_grad_()
    alone = fn(alone_x[known], targets[known])
    alone.backward()
    torch.testing.assert_close(masked, alone)
    assert masked_x.grad is not None and alone_x.grad is not None
    torch.testing.assert_close(masked_x.grad, alone_x.grad)
    assert torch.all(masked_x.grad[~known] == 0)
    minus_one = torch.where(known, targets, -1.0)  # -1 means unknown too, as in the family
    torch.testing.assert_close(fn(logits, minus_one), masked.detach())


@pytest.mark.parametrize("name", sorted(ROBUST_LOSS_PRESETS))
def test_unknown_cells_get_no_gradient_and_change_nothing_else_when_moved(name: str) -> None:
    logits, targets = _batch(3)
    targets[2:5, 1:3] = math.nan
    module = _modules()[name]
    x = logits.clone().requires_grad_()
    value = module(x, targets)
    value.backward()
    assert x.grad is not None and torch.isfinite(value) and float(value.detach()) > 0
    assert torch.all(x.grad[2:5, 1:3] == 0)
    moved = logits.clone()
    moved[2:5, 1:3] = torch.tensor([[50.0, -50.0]] * 3, dtype=torch.float64)
    torch.testing.assert_close(module(moved, targets), value.detach())


@pytest.mark.parametrize("name", sorted(ROBUST_LOSS_PRESETS))
def test_grad_mode_is_left_alone(name: str) -> None:
    module = _modules()[name]
    logits, targets = _batch(4)
    x = logits.clone().requires_grad_()
    with torch.no_grad():
        out = module(x, targets)
        assert not torch.is_grad_enabled()
    assert out.grad_fn is None
    with torch.inference_mode():
        assert module(x, targets).grad_fn is None
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("name", sorted(ROBUST_LOSS_PRESETS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_logits_are_computed_in_float32(name: str, dtype: torch.dtype) -> None:
    module = _modules()[name]
    logits, targets = _batch(5)
    half = logits.to(dtype).requires_grad_()
    out = module(half, targets.to(dtype))
    assert out.dtype == torch.float32
    out.backward()
    assert half.grad is not None and half.grad.dtype == dtype
    reference = module(half.detach().double(), targets)
    assert float(out) == pytest.approx(float(reference), rel=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert module(logits.float(), targets.float()).dtype == torch.float32


@pytest.mark.parametrize("name", ["hill", "splc", "dbl"])
def test_reductions(name: str) -> None:
    logits, targets = _batch(6)
    targets[0, 1] = math.nan
    kwargs: dict[str, Any] = COUNTS if name == "dbl" else {}
    fn = FUNCTIONS[name]
    none = fn(logits, targets, reduction="none", **kwargs)
    assert none.shape == logits.shape and float(none[0, 1]) == 0.0
    total = fn(logits, targets, reduction="sum", **kwargs)
    torch.testing.assert_close(total, none.sum())
    mean = fn(logits, targets, reduction="mean", **kwargs)
    torch.testing.assert_close(mean, total / (logits.numel() - 1))


def test_two_way_sum_is_the_official_mean_times_the_batch() -> None:
    logits, targets = _batch(7)
    official = two_way_loss(logits, targets)
    torch.testing.assert_close(two_way_loss(logits, targets, reduction="sum"), official * logits.shape[0])
    torch.testing.assert_close(TwoWayLoss()(logits, targets), official * logits.shape[0])
    with pytest.raises(ValueError, match="reduction"):
        two_way_loss(logits, targets, reduction="none")
    with pytest.raises(ValueError, match="N x C"):
        two_way_loss(logits[0], targets[0])


def test_two_way_without_positives_or_negatives_stays_finite() -> None:
    logits, targets = _batch(8)
    x = logits.clone().requires_grad_()
    zero = two_way_loss(x, torch.zeros_like(targets))
    zero.backward()
    assert float(zero) == 0.0 and x.grad is not None and torch.all(x.grad == 0)
    x.grad = None
    ones = two_way_loss(x, torch.ones_like(targets))  # no negative anywhere: the -100 mask keeps it finite
    ones.backward()
    assert torch.isfinite(ones) and torch.all(torch.isfinite(x.grad))


def test_extreme_logits_are_finite() -> None:
    logits = torch.tensor([[-200.0, -30.0, 0.0, 30.0, 200.0]] * 4)
    targets = torch.tensor([[1.0, 0.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0, 0.0]] * 2)
    counts = {"label_counts": [2.0, 2.0, 2.0, 2.0, 2.0], "num_samples": 10}
    for name, module in {**_modules(), "dbl": DistributionBalancedLoss(**counts)}.items():  # type: ignore[arg-type]
        x = logits.clone().requires_grad_()
        out = module(x, targets)
        out.backward()
        assert torch.isfinite(out) and x.grad is not None and torch.all(torch.isfinite(x.grad)), name


def test_dbl_counts_outside_the_formula_range_are_clamped_to_finite_values() -> None:
    logits, targets = _batch(9)
    counts = [0.0, 400.0, 5.0, 1.0, 80.0, 12.0]  # never and always positive in the training split
    out = distribution_balanced_loss(logits, targets, label_counts=counts, num_samples=400)
    assert torch.isfinite(out)
    with pytest.raises(ValueError, match="one count per class"):
        distribution_balanced_loss(logits, targets, label_counts=[1.0, 2.0], num_samples=400)
    with pytest.raises(ValueError, match="num_samples"):
        distribution_balanced_loss(logits, targets, label_counts=counts, num_samples=1)


def test_dbl_reweights_rare_labels_up_and_shifts_logits_by_their_prior() -> None:
    """One positive of a rare label and one of a common label, alone in their rows."""
    logits = torch.zeros(2, 2, dtype=torch.float64)
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    counts = {"label_counts": [5.0, 200.0], "num_samples": 400}
    cells = distribution_balanced_loss(logits, targets, **counts, init_bias=0.0, reduction="none")  # type: ignore[arg-type]
    # Alone in its row, a positive's ratio (1/n_c)/r_i is 1: both get 0.1 + sigmoid(10 * 0.8).
    assert float(cells[0, 0]) == pytest.approx(float(cells[1, 1]))
    biased = distribution_balanced_loss(logits, targets, **counts, reduction="none")  # type: ignore[arg-type]
    # The prior bias lowers the rare label's logit more, so its positive costs more.
    assert float(biased[0, 0]) > float(biased[1, 1])


def test_splc_corrects_confident_negatives_from_the_change_epoch_on() -> None:
    logits = torch.tensor([[3.0, -3.0, 0.0]], dtype=torch.float64)
    targets = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    module = SPLCLoss()
    assert not module.correct  # before the loop says which epoch it is
    module.set_epoch(1)
    torch.testing.assert_close(module(logits, targets), splc_loss(logits, targets, correct=False))
    module.set_epoch(2)
    assert module.correct
    corrected = splc_loss(logits, torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64), correct=False)
    # The corrected cell is a positive with its unshifted logit, so not the same as a given positive.
    assert float(module(logits, targets)) != pytest.approx(float(corrected))
    by_hand = splc_loss(logits[:, 1:], targets[:, 1:], correct=False)
    flipped = (
        -torch.nn.functional.logsigmoid(torch.tensor(3.0, dtype=torch.float64))
        * torch.sigmoid(torch.tensor(-3.0, dtype=torch.float64)) ** 2
    )
    torch.testing.assert_close(module(logits, targets), by_hand + flipped)


@pytest.mark.parametrize("name", sorted(ROBUST_LOSS_PRESETS))
def test_build_loss_uses_the_spec_and_the_training_counts(name: str) -> None:
    spec = LossSpec.model_validate({"name": name})
    if name == "dbl":
        with pytest.raises(ValueError, match="label_counts"):
            build_loss(spec)
        module = build_loss(spec, label_counts=COUNTS["label_counts"], num_samples=400)  # type: ignore[arg-type]
    else:
        module = build_loss(spec)
    assert type(module) is ROBUST_LOSS_CLASSES[name]
    logits, targets = _batch(10)
    assert torch.isfinite(module(logits, targets))


def test_build_loss_takes_the_overrides() -> None:
    logits, targets = _batch(11)
    hill = build_loss(LossSpec.model_validate({"name": "hill", "lamb": 2.0, "margin": 0.5}))
    torch.testing.assert_close(hill(logits, targets), hill_loss(logits, targets, lamb=2.0, margin=0.5))
    splc = build_loss(LossSpec.model_validate({"name": "splc", "change_epoch": 3}))
    assert isinstance(splc, SPLCLoss) and splc.change_epoch == 3
    two = build_loss(LossSpec.model_validate({"name": "twoway", "tp": 2.0}), reduction="mean")
    torch.testing.assert_close(two(logits, targets), two_way_loss(logits, targets, tp=2.0))


@pytest.mark.parametrize(
    ("fn", "kwargs", "match"),
    [
        (hill_loss, {"gamma": -1.0}, "gamma"),
        (hill_loss, {"lamb": math.inf}, "lamb"),
        (hill_loss, {"reduction": "avg"}, "reduction"),
        (splc_loss, {"tau": 1.5}, "tau"),
        (two_way_loss, {"tp": 0.0}, "tp"),
        (distribution_balanced_loss, {**COUNTS, "neg_scale": 0.0}, "neg_scale"),
    ],
)
def test_invalid_parameters_fail_loudly(fn: Any, kwargs: dict[str, Any], match: str) -> None:
    logits, targets = _batch(12)
    with pytest.raises(ValueError, match=match):
        fn(logits, targets, **kwargs)


@pytest.mark.parametrize("name", sorted(ROBUST_LOSS_PRESETS))
def test_the_compiled_path_equals_the_eager_one(name: str) -> None:
    """128 x 160 is above COMPILE_MIN_NUMEL, so the default backend compiles the fused body."""
    torch.manual_seed(0)
    logits = torch.randn(128, 160) * 3
    targets = (torch.rand(128, 160) < 0.1).float()
    targets[:5, :5] = math.nan
    counts = {"label_counts": [float(v) + 1.0 for v in torch.nan_to_num(targets).sum(0)], "num_samples": 1000}
    module = DistributionBalancedLoss(**counts) if name == "dbl" else _modules()[name]  # type: ignore[arg-type]
    compiled_x = logits.clone().requires_grad_()
    compiled = module(compiled_x, targets)
    compiled.backward()
    set_compile_enabled(False)
    try:
        eager_x = logits.double().requires_grad_()
        eager = module(eager_x, targets.double())
        eager.backward()
    finally:
        set_compile_enabled(True)
    assert float(compiled) == pytest.approx(float(eager), rel=1e-4)
    assert compiled_x.grad is not None and eager_x.grad is not None
    torch.testing.assert_close(compiled_x.grad, eager_x.grad.float(), rtol=1e-3, atol=1e-6)


class _Spy(TrainerCallback):
    """Counts the SPLC corrections the loop switches on, epoch by epoch."""

    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_evaluate(self, metrics: EpochMetrics) -> None:
        self.epochs.append(metrics.epoch)


def _config(dataset: Path, model: str, loss: LossSpec, epochs: int = 2) -> TrainConfig:
    hp = Hyperparameters(epochs=epochs, batch_size=8, learning_rate=1e-2, max_length=32, seed=0)
    return TrainConfig(dataset_dir=dataset, base_model=model, loss=loss, hyperparameters=hp, device="cpu")


def test_training_with_dbl_takes_and_records_the_training_splits_frequencies(
    text_dataset: Path, tiny_bert: str
) -> None:
    result = train(_config(text_dataset, tiny_bert, LossSpec.model_validate({"name": "dbl"})))
    assert result.best_metrics is not None and math.isfinite(result.history[-1].train_loss)
    stored = load_stored_dataset(text_dataset)
    train_idx, _, _ = job_split(stored.targets, 0.2, 0, None)
    train_set = stored.subset(train_idx)
    assert result.loss_frequencies == {
        "num_samples": len(train_set),
        "label_counts": dict(zip(stored.labels, train_set.positive_counts, strict=True)),
    }
    assert len(train_set) < len(stored)  # the validation split's labels are not counted
    assert train(_config(text_dataset, tiny_bert, LossSpec(name="bce"), epochs=1)).loss_frequencies is None


@pytest.mark.parametrize("name", ["hill", "splc", "twoway"])
def test_training_runs_with_each_new_loss(text_dataset: Path, tiny_bert: str, name: str) -> None:
    spy = _Spy()
    result = train(_config(text_dataset, tiny_bert, LossSpec.model_validate({"name": name})), [spy])
    assert spy.epochs == [1, 2] and all(math.isfinite(m.train_loss) for m in result.history)
    assert result.best_metrics is not None

"""Presets against the well-known losses, the modules and build_loss, weights, masks, validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from apl.losses import (
    LOSS_CLASSES,
    AsymmetricLoss,
    AsymmetricPolynomialLoss,
    BinaryCrossEntropyLoss,
    FocalLoss,
    asymmetric_polynomial_loss,
    build_loss,
)
from apl.losses.reference import reference_loss
from apl.spec import LOSS_PRESETS, LossSpec


def batch(dtype: torch.dtype, soft: bool = False, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(8, 13, generator=gen, dtype=dtype) * 5
    logits[0, :4] = torch.tensor([-60.0, 60.0, -15.0, 15.0], dtype=dtype)
    if soft:
        targets = torch.rand(8, 13, generator=gen, dtype=dtype)
    else:
        targets = (torch.rand(8, 13, generator=gen) < 0.4).to(dtype)
    return logits, targets


def loss_and_grad(
    fn: object, logits: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    x = logits.clone().requires_grad_()
    out = fn(x, targets)  # type: ignore[operator]
    out.sum().backward()
    assert x.grad is not None
    return out.detach(), x.grad


TOL = {torch.float64: {"rtol": 1e-12, "atol": 1e-14}, torch.float32: {"rtol": 1e-5, "atol": 1e-6}}


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_bce_preset_is_bce_with_logits(dtype: torch.dtype, reduction: str, soft: bool) -> None:
    logits, targets = batch(dtype, soft)
    ours = loss_and_grad(BinaryCrossEntropyLoss(reduction=reduction), logits, targets)
    theirs = loss_and_grad(
        lambda x, y: F.binary_cross_entropy_with_logits(x, y, reduction=reduction), logits, targets
    )
    torch.testing.assert_close(ours[0], theirs[0], **TOL[dtype])
    torch.testing.assert_close(ours[1], theirs[1], **TOL[dtype])


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_focal_preset_without_detach_is_torchvision_sigmoid_focal_loss(
    dtype: torch.dtype, soft: bool
) -> None:
    logits, targets = batch(dtype, soft)
    ours = loss_and_grad(FocalLoss(detach_focal_weight=False), logits, targets)
    theirs = loss_and_grad(
        lambda x, y: sigmoid_focal_loss(x, y, alpha=-1, gamma=2, reduction="sum"), logits, targets
    )
    torch.testing.assert_close(ours[0], theirs[0], **TOL[dtype])
    torch.testing.assert_close(ours[1], theirs[1], **TOL[dtype])


def test_apl_preset_positive_gradient_is_the_hand_check() -> None:
    logits = torch.linspace(-12, 12, 97, dtype=torch.float64)
    _, grad = loss_and_grad(AsymmetricPolynomialLoss(), logits, torch.ones_like(logits))
    p = torch.sigmoid(logits)
    torch.testing.assert_close(grad, -((1 - p) ** 2) * (1 + 2.5 * p), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("name", sorted(LOSS_PRESETS))
@pytest.mark.parametrize("detach", [True, False])
def test_presets_match_the_plain_autograd_reference(name: str, detach: bool) -> None:
    logits, targets = batch(torch.float64, soft=name == "asl", seed=5)
    params = LOSS_PRESETS[name]
    ours = loss_and_grad(
        lambda x, y: asymmetric_polynomial_loss(x, y, **params, detach_focal_weight=detach, reduction="none"),
        logits,
        targets,
    )
    theirs = loss_and_grad(
        lambda x, y: reference_loss(x, y, **params, detach_focal_weight=detach, reduction="none"),
        logits,
        targets,
    )
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ours[1], theirs[1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", sorted(LOSS_PRESETS))
def test_module_classes_carry_the_preset_defaults(name: str) -> None:
    module = LOSS_CLASSES[name]()
    assert module.preset == name
    assert module.parameters_dict() == LOSS_PRESETS[name]
    assert module.detach_focal_weight is True and module.reduction == "sum"


def test_build_loss_uses_the_preset_class_and_the_overrides() -> None:
    module = build_loss(
        LossSpec(name="asl", gamma_neg=2.0, clip=0.1, detach_focal_weight=False), reduction="mean"
    )
    assert type(module) is AsymmetricLoss
    assert module.parameters_dict() == {**LOSS_PRESETS["asl"], "gamma_neg": 2.0, "clip": 0.1}
    assert module.detach_focal_weight is False and module.reduction == "mean"
    assert type(build_loss(LossSpec())) is AsymmetricPolynomialLoss
    assert type(build_loss(LossSpec(name="bce"))) is BinaryCrossEntropyLoss
    assert type(build_loss(LossSpec(name="focal"))) is FocalLoss
    assert "gamma_neg=2" in repr(module)


def test_built_loss_equals_the_functional_form() -> None:
    spec = LossSpec(name="apl", alpha2=1.0, beta=1.5)
    logits, targets = batch(torch.float64)
    module = build_loss(spec, reduction="none")
    expected = asymmetric_polynomial_loss(logits, targets, **spec.parameters(), reduction="none")
    torch.testing.assert_close(module(logits, targets), expected, rtol=0, atol=0)


def test_modules_keep_no_tensors_between_calls() -> None:
    module = build_loss(LossSpec(name="apl"))
    before = dict(vars(module))
    logits, targets = batch(torch.float32)
    module(logits.requires_grad_(), targets).backward()
    module(logits.double(), targets.double())
    assert dict(vars(module)) == before
    assert not list(module.parameters()) and not list(module.buffers())
    assert module.state_dict() == {}
    assert not any(isinstance(v, torch.Tensor) for v in vars(module).values())


def test_module_validates_at_construction() -> None:
    with pytest.raises(ValueError, match="clip"):
        AsymmetricPolynomialLoss(clip=1.0)
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma_pos=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        BinaryCrossEntropyLoss(reduction="avg")
    with pytest.raises(ValueError, match="finite"):
        AsymmetricLoss(alpha1=float("nan"))


def test_class_weights_multiply_each_column() -> None:
    logits, targets = batch(torch.float64, soft=True)
    weight = torch.linspace(0.0, 2.0, 13, dtype=torch.float64)
    params = LOSS_PRESETS["asl"]
    plain, plain_grad = loss_and_grad(
        lambda x, y: asymmetric_polynomial_loss(x, y, **params, reduction="none"), logits, targets
    )
    for reduction, reduce in (("none", lambda t: t), ("sum", torch.sum), ("mean", torch.mean)):
        got, grad = loss_and_grad(
            lambda x, y, r=reduction: asymmetric_polynomial_loss(x, y, **params, reduction=r, weight=weight),
            logits,
            targets,
        )
        torch.testing.assert_close(got, reduce(plain * weight), rtol=1e-12, atol=1e-14)
        scale = plain.numel() if reduction == "mean" else 1
        torch.testing.assert_close(grad, plain_grad * weight / scale, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("how", ["negative", "nan", "mask", "row-mask"])
def test_unknown_labels_contribute_nothing_and_mean_counts_known_ones(how: str) -> None:
    logits, targets = batch(torch.float64)
    known = torch.rand(8, 13, generator=torch.Generator().manual_seed(9)) < 0.6
    mask: torch.Tensor | None = None
    marked = targets.clone()
    if how == "negative":
        marked[~known] = -1.0
    elif how == "nan":
        marked[~known] = float("nan")
    elif how == "mask":
        mask = known
    else:
        known = torch.zeros(8, 1, dtype=torch.bool)
        known[::2] = True
        mask = known
        known = known.expand(8, 13)
    params = LOSS_PRESETS["apl"]

    def run(reduction: str) -> tuple[torch.Tensor, torch.Tensor]:
        return loss_and_grad(
            lambda x, y: asymmetric_polynomial_loss(
                x, y, **params, reduction=reduction, mask=mask, detach_focal_weight=False
            ),
            logits,
            marked,
        )

    full, full_grad = loss_and_grad(
        lambda x, y: asymmetric_polynomial_loss(x, y, **params, reduction="none", detach_focal_weight=False),
        logits,
        targets,
    )
    none, none_grad = run("none")
    torch.testing.assert_close(none, torch.where(known, full, 0.0), rtol=0, atol=0)
    torch.testing.assert_close(none_grad, torch.where(known, full_grad, 0.0), rtol=0, atol=0)
    total, total_grad = run("sum")
    torch.testing.assert_close(total, full[known].sum(), rtol=1e-12, atol=0)
    mean, mean_grad = run("mean")
    count = int(known.sum())
    torch.testing.assert_close(mean, full[known].sum() / count, rtol=1e-12, atol=0)
    torch.testing.assert_close(mean_grad, total_grad / count, rtol=1e-12, atol=0)


def test_mean_with_every_label_unknown_is_zero_with_zero_gradient() -> None:
    logits, _ = batch(torch.float32)
    targets = torch.full_like(logits, -1.0)
    loss, grad = loss_and_grad(
        lambda x, y: asymmetric_polynomial_loss(x, y, **LOSS_PRESETS["apl"], reduction="mean"),
        logits,
        targets,
    )
    assert float(loss) == 0.0
    assert torch.count_nonzero(grad) == 0


def test_bad_inputs_are_refused() -> None:
    params = LOSS_PRESETS["apl"]
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="shape"):
        asymmetric_polynomial_loss(x, torch.zeros(3, 2), **params)
    with pytest.raises(TypeError, match="floating"):
        asymmetric_polynomial_loss(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3), **params)
    with pytest.raises(TypeError, match="boolean"):
        asymmetric_polynomial_loss(x, torch.zeros(2, 3), **params, mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="broadcast"):
        asymmetric_polynomial_loss(x, torch.zeros(2, 3), **params, mask=torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="weight"):
        asymmetric_polynomial_loss(x, torch.zeros(2, 3), **params, weight=torch.ones(2))
    with pytest.raises(ValueError, match="reduction"):
        asymmetric_polynomial_loss(x, torch.zeros(2, 3), **params, reduction="batchmean")
    for key, value in (("gamma_neg", -1.0), ("clip", -0.1), ("clip", 1.0), ("alpha1", float("inf"))):
        with pytest.raises(ValueError):
            asymmetric_polynomial_loss(x, torch.zeros(2, 3), **{**params, key: value})


def test_boolean_and_integer_targets_are_accepted() -> None:
    logits, targets = batch(torch.float32)
    expected = asymmetric_polynomial_loss(logits, targets, **LOSS_PRESETS["asl"])
    for other in (targets.bool(), targets.long(), targets.half()):
        torch.testing.assert_close(asymmetric_polynomial_loss(logits, other, **LOSS_PRESETS["asl"]), expected)

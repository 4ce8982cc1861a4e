"""core.sweeps.candidates: the dataset profile and the regime-based choice of candidate losses."""

from __future__ import annotations

import pytest

from core.sweeps.candidates import LONG_TAIL_RATIO, choose, profile


def _names(counts: dict[str, int], cardinality: float, unknown: int | None, n: int = 100) -> list[str]:
    return [c.name for c in choose(profile(n, counts, cardinality, unknown))[0]]


def test_profile_numbers() -> None:
    p = profile(100, {"a": 60, "b": 5, "c": 0}, 0.65, 30)
    assert p.imbalance_ratio == 60.0  # a label without samples counts as 1
    assert p.unknown_share == pytest.approx(30 / 300)
    assert p.as_dict() == {"label_cardinality": 0.65, "imbalance_ratio": 60.0, "unknown_share": 0.1}
    assert profile(10, {}, 0.0, None).imbalance_ratio == 1.0


@pytest.mark.parametrize(
    ("counts", "cardinality", "unknown", "extra"),
    [
        ({"a": 50, "b": 40}, 2.0, 0, []),
        ({"a": 50, "b": 5}, 2.0, None, ["dbl"]),
        ({"a": 50, "b": 40}, 2.0, 3, ["hill", "splc"]),
        ({"a": 50, "b": 4}, 2.0, 3, ["dbl", "hill", "splc"]),
        ({f"l{i}": 12 for i in range(10)}, 1.2, 0, ["hill", "splc"]),  # many labels, ~one per sample
        ({f"l{i}": 12 for i in range(3)}, 1.0, 0, []),  # few labels: a single-label task, not under-tagged
    ],
)
def test_the_profile_adds_the_losses_of_its_regime(
    counts: dict[str, int], cardinality: float, unknown: int | None, extra: list[str]
) -> None:
    assert _names(counts, cardinality, unknown) == ["bce", "focal", "asl", "apl", *extra]


def test_the_reason_names_the_regime() -> None:
    _, reason = choose(profile(100, {"a": 80, "b": 2}, 1.0, 10))
    assert "dbl" in reason and "40.0x" in reason and "hill, splc" in reason and "unknown" in reason
    _, plain = choose(profile(100, {"a": 80, "b": 80 / LONG_TAIL_RATIO + 1}, 2.0, 0))  # type: ignore[dict-item]
    assert plain.startswith("the four presets bce, focal, asl, apl:") and "no long tail" in plain

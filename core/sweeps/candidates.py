"""Which losses a sweep compares when the client leaves `candidates` out: chosen from the data.

A dataset's profile (label cardinality, imbalance ratio of the most to the least
frequent label, share of unknown cells) comes from what its row already holds, so
every dataset has one, old ones included. The four presets of the APL family always
run; the profile adds the losses made for its regime (docs/losses.md):

- a long tail (imbalance ratio >= LONG_TAIL_RATIO): `dbl`, the Distribution-Balanced loss;
- unknown cells, or under-tagging suspected (many labels but about one per sample,
  LOW_CARDINALITY or less with MANY_LABELS or more): `hill` and `splc`, the losses for
  missing labels.

The reason is written out for people (Sweep.candidates_reason). Explicit candidates
are used as given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from apl.spec import LOSS_PRESETS, LossSpec

#: Most / least frequent label at or above which a label set counts as long-tailed.
LONG_TAIL_RATIO = 10.0
#: Mean labels per sample at or below which a many-label set looks under-tagged. Rules of
#: thumb: the demo movie titles have 1.58 labels per sample complete and 1.22 with 40% of
#: their positives removed (7 labels); a label set alone cannot prove tags missing.
LOW_CARDINALITY = 1.3
#: Labels a set needs before a low cardinality suggests missing tags (not a single-label task).
MANY_LABELS = 5


@dataclass(frozen=True)
class DatasetProfile:
    """The few numbers that say which losses a dataset calls for."""

    label_cardinality: float
    #: Samples of the most frequent label over those of the least (a label with none counts as 1).
    imbalance_ratio: float
    #: Unknown cells over all label cells (samples x labels).
    unknown_share: float
    num_labels: int

    def as_dict(self) -> dict[str, float]:
        return {
            "label_cardinality": round(self.label_cardinality, 4),
            "imbalance_ratio": round(self.imbalance_ratio, 4),
            "unknown_share": round(self.unknown_share, 6),
        }


def profile(
    num_samples: int, label_counts: Mapping[str, int], label_cardinality: float, unknown_cells: int | None
) -> DatasetProfile:
    """The profile from a dataset's stored counts."""
    counts = list(label_counts.values())
    ratio = max(counts) / max(min(counts), 1) if counts else 1.0
    cells = num_samples * len(counts)
    share = (unknown_cells or 0) / cells if cells else 0.0
    return DatasetProfile(float(label_cardinality), float(ratio), float(share), len(counts))


def _reasons(p: DatasetProfile) -> tuple[list[str], list[str]]:
    added: list[str] = []
    why: list[str] = []
    if p.imbalance_ratio >= LONG_TAIL_RATIO:
        added.append("dbl")
        why.append(
            f"long tail: the most frequent label has {p.imbalance_ratio:.1f}x the samples of the rarest"
        )
    if p.unknown_share > 0:
        added += ["hill", "splc"]
        why.append(f"{p.unknown_share:.1%} of the label cells are unknown")
    elif p.label_cardinality <= LOW_CARDINALITY and p.num_labels >= MANY_LABELS:
        added += ["hill", "splc"]
        why.append(
            f"under-tagging suspected: {p.label_cardinality:.2f} labels per sample, {p.num_labels} labels"
        )
    return added, why


def choose(p: DatasetProfile) -> tuple[list[LossSpec], str]:
    """The candidates for a dataset of profile `p`, and why, in one sentence."""
    added, why = _reasons(p)
    names: Sequence[str] = [*LOSS_PRESETS, *added]
    candidates = [LossSpec.model_validate({"name": name}) for name in names]
    base = "the four presets bce, focal, asl, apl"
    if not added:
        return candidates, (
            f"{base}: no long tail (imbalance {p.imbalance_ratio:.1f}x < {LONG_TAIL_RATIO:g}x), "
            "no unknown cells, no sign of under-tagging"
        )
    return candidates, f"{base}, plus {', '.join(added)}: " + "; ".join(why)

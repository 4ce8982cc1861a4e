"""Label names: cleaning one sample's labels and summarising the whole dataset's."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from api.ingest.failures import invalid, quote
from api.ingest.limits import IngestLimits
from apl.formats import UNKNOWN_KEY
from apl.spec import Hyperparameters

#: The validation share a job takes when it does not say (the warnings judge the split by it).
DEFAULT_VAL_FRACTION: float = Hyperparameters.model_fields["val_fraction"].default


def _some(names: list[str], shown: int = 5) -> str:
    """The first few names, quoted, and how many more: what a warning about many labels lists."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(quote(name) for name in names[:shown]) + more


#: Separates the label names of a CSV labels cell unless the upload names another.
LABEL_SEPARATOR = "|"


def clean_labels(
    names: Iterable[str], where: str, limits: IngestLimits, separator: str | None = None
) -> list[str]:
    """Trim names, reject empty or overlong ones, drop repeats; sorted so equal sets store equally.

    `separator` is the one the names were split on (a CSV cell), for the error message.
    """
    cleaned: set[str] = set()
    for name in names:
        label = name.strip()
        if not label:
            hint = f" (check for {separator * 2!r} or a trailing {separator!r})" if separator else ""
            raise invalid("invalid_label", f"{where}: a label name is empty{hint}")
        if len(label) > limits.max_label_chars:
            raise invalid(
                "invalid_label",
                f"{where}: label {quote(label)} is longer than {limits.max_label_chars} characters",
            )
        cleaned.add(label)
    if len(cleaned) > limits.max_labels_per_sample:
        raise invalid(
            "too_many_labels",
            f"{where}: {len(cleaned)} labels on one sample; at most {limits.max_labels_per_sample}",
        )
    return sorted(cleaned)


def with_unknown(sample: dict[str, Any], unknown: list[str]) -> dict[str, Any]:
    """The stored sample; `unknown` only when it names something, so fully labelled data is stored
    exactly as before (and older datasets, which never have the key, read unchanged)."""
    return {**sample, UNKNOWN_KEY: unknown} if unknown else sample


def clean_unknown(
    names: Iterable[str], labels: list[str], where: str, limits: IngestLimits, separator: str | None = None
) -> list[str]:
    """The sample's unknown label names, cleaned like labels; a name also given as a label is refused.

    A sample may leave any number of labels unknown (up to the dataset's label limit), so the
    per-sample cap of given labels does not apply here.
    """
    unknown = clean_labels(names, where, replace(limits, max_labels_per_sample=limits.max_labels), separator)
    both = sorted(set(unknown) & set(labels))
    if both:
        raise invalid(
            "label_known_and_unknown",
            f"{where}: label {quote(both[0])} is both given and marked unknown; "
            "a label is either in the labels or in the unknown column, not both",
        )
    return unknown


@dataclass
class LabelTally:
    """Counts gathered while samples stream past, so statistics need no second pass."""

    counts: Counter[str] = field(default_factory=Counter)
    #: Per label name: on how many samples it is marked unknown (names never given included).
    unknown: Counter[str] = field(default_factory=Counter)
    num_samples: int = 0
    num_unlabelled: int = 0
    total_labels: int = 0

    def add(self, labels: list[str], where: str, limits: IngestLimits, unknown: Iterable[str] = ()) -> None:
        for label in labels:
            if label not in self.counts and len(self.counts) >= limits.max_labels:
                raise invalid(
                    "too_many_labels", f"{where}: the dataset has more than {limits.max_labels} labels"
                )
            self.counts[label] += 1
        for name in unknown:
            if name not in self.unknown and len(self.unknown) >= limits.max_labels:
                raise invalid(
                    "too_many_labels",
                    f"{where}: the unknown column names more than {limits.max_labels} distinct labels",
                )
            self.unknown[name] += 1
        self.num_samples += 1
        self.total_labels += len(labels)
        if not labels:
            self.num_unlabelled += 1

    @property
    def stray_unknown(self) -> list[str]:
        """Names marked unknown that no sample gives as a label: not labels of this dataset."""
        return sorted(name for name in self.unknown if name not in self.counts)

    @property
    def unknown_counts(self) -> dict[str, int]:
        """Unknown cells per label of the dataset (stray names left out), every label listed."""
        return {label: self.unknown[label] for label in self.labels}

    @property
    def unknown_cells(self) -> int:
        return sum(self.unknown_counts.values())

    def check(self, limits: IngestLimits) -> None:
        """Refuse datasets no multi-label model can be trained or validated on."""
        if self.num_samples < limits.min_samples:
            raise invalid(
                "too_few_samples",
                f"the dataset has {self.num_samples} samples; at least {limits.min_samples} are needed",
            )
        if len(self.counts) < limits.min_labels:
            found = ", ".join(quote(name) for name in sorted(self.counts)) or "none"
            raise invalid(
                "too_few_labels",
                f"the dataset has {len(self.counts)} distinct label{'' if len(self.counts) == 1 else 's'} "
                f"({found}); "
                f"at least {limits.min_labels} are needed",
            )

    @property
    def labels(self) -> list[str]:
        return sorted(self.counts)

    @property
    def label_counts(self) -> dict[str, int]:
        return {label: self.counts[label] for label in self.labels}

    @property
    def cardinality(self) -> float:
        return self.total_labels / self.num_samples if self.num_samples else 0.0

    def _validation_notes(self, limits: IngestLimits) -> list[str]:
        """What the default validation split (`DEFAULT_VAL_FRACTION`) will be too small to judge."""
        notes: list[str] = []
        share = f"{DEFAULT_VAL_FRACTION:.0%}"
        expected = round(self.num_samples * DEFAULT_VAL_FRACTION)
        if expected < limits.min_validation_samples:
            notes.append(
                f"Only about {expected} samples go to validation (the default {share}); metrics, "
                f"thresholds and calibration need at least {limits.min_validation_samples}: upload more "
                "samples or raise hyperparameters.val_fraction."
            )
        thin = [
            label
            for label in self.labels
            if limits.rare_label_samples <= self.counts[label]
            and round(self.counts[label] * DEFAULT_VAL_FRACTION) < limits.min_validation_positives
        ]
        if thin:
            notes.append(
                f"{len(thin)} label{'' if len(thin) == 1 else 's'} ({_some(thin)}) will have fewer than "
                f"{limits.min_validation_positives} validation samples each (of the default {share}); "
                "their thresholds keep the fallback and their metrics are noisy."
            )
        return notes

    def warnings(self, limits: IngestLimits) -> list[str]:
        """Sentences for a person: legal datasets that will train badly, and why."""
        notes: list[str] = []
        for label in self.labels:
            n = self.counts[label]
            if n < limits.rare_label_samples:
                noun = "sample" if n == 1 else "samples"
                notes.append(
                    f"Label {quote(label)} has only {n} {noun}; its metrics will be unreliable and it "
                    f"may be missing from the validation split "
                    f"(at least {limits.rare_label_samples} recommended)."
                )
            elif n == self.num_samples:
                notes.append(
                    f"Label {quote(label)} is on every sample, so a model can learn nothing from it."
                )
        if self.num_unlabelled:
            notes.append(
                f"{self.num_unlabelled} of {self.num_samples} samples have no label; "
                f"they count as negatives for every label{' not marked unknown' if self.unknown else ''}."
            )
        stray = self.stray_unknown
        if stray:
            notes.append(
                f"The unknown column names {len(stray)} label{'' if len(stray) == 1 else 's'} that no sample "
                f"has ({_some(stray)}); they are not labels of this dataset and were ignored."
            )
        return notes + self._validation_notes(limits)

"""Bounds on what one dataset upload may hold; every check in ingest reads them from here."""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


@dataclass(frozen=True)
class IngestLimits:
    """Limits that keep a hostile or broken upload from exhausting disk, memory or CPU.

    Frozen so one instance can serve as a shared default. Tests lower single fields
    (e.g. `max_members`) to exercise a check without building huge files.
    """

    min_samples: int = 10
    """A dataset smaller than this cannot be split into train and validation sets."""
    min_labels: int = 2
    """Multi-label classification needs at least this many distinct labels."""
    max_labels: int = 10_000
    max_labels_per_sample: int = 1_000
    max_label_chars: int = 100
    max_text_chars: int = 20_000
    max_line_bytes: int = 1 * MIB
    """A longer physical line in a CSV or JSONL file is rejected before it is held in memory."""
    rare_label_samples: int = 5
    """Labels with fewer samples than this get a warning: their metrics will be noise."""
    min_validation_samples: int = 50
    """Fewer expected validation samples (at the default val_fraction) get a warning."""
    min_validation_positives: int = 5
    """Labels expecting fewer validation positives than this get a warning: thresholds fall back."""
    max_members: int = 100_000
    max_total_uncompressed: int = 4 * GIB
    max_compression_ratio: float = 100.0
    ratio_check_min_bytes: int = 64 * KIB
    """Members smaller than this skip the ratio check: tiny files compress wildly and harmlessly."""
    max_member_name_chars: int = 1_024
    max_image_pixels: int = 40_000_000

"""Typed failures of the training engine, each with a stable machine code.

The worker turns any `AplError` into a failed job with `error.code` and `str(error)`
as the message, so every code here is part of the job contract and the message must
make sense to a person who never saw the stack trace (no file system paths).
"""

from __future__ import annotations


class AplError(Exception):
    """Base of every expected failure raised by `apl` (bad data, missing model, ...)."""

    code = "training_failed"


class DatasetError(AplError, ValueError):
    """The stored dataset cannot be read or cannot be split for training."""

    code = "dataset_unreadable"


class ModelUnavailableError(AplError, ValueError):
    """A base model cannot be built: unknown architecture, missing weights, no network for a hub id."""

    code = "model_unavailable"


class DeviceUnavailableError(AplError, RuntimeError):
    """The requested device (e.g. `cuda`) or precision is not available on this machine."""

    code = "device_unavailable"


class TrainingDivergedError(AplError, RuntimeError):
    """The loss or the predictions became NaN or infinite."""

    code = "training_diverged"


class CheckpointError(AplError, ValueError):
    """A checkpoint is unreadable or belongs to a different job configuration."""

    code = "checkpoint_invalid"


class ArtifactError(AplError, ValueError):
    """A model artifact is malformed, unsafe to unpack, or of an unknown format version."""

    code = "invalid_artifact"

"""Choosing the device and the mixed-precision mode for a run."""

from __future__ import annotations

from typing import Literal

import torch

from apl.errors import DeviceUnavailableError

Precision = Literal["fp32", "fp16", "bf16"]


def resolve_device(requested: str, mixed_precision: str) -> tuple[torch.device, Precision]:
    """CUDA with bf16 (or fp16 where bf16 is unsupported) when available, else CPU in fp32.

    Mixed precision only applies on CUDA; on CPU every run is fp32, whatever was asked,
    because CPU autocast is slower than fp32 for these models.
    """
    cuda = torch.cuda.is_available()
    if requested == "cuda" and not cuda:
        raise DeviceUnavailableError("a CUDA device was requested but none is available")
    if requested not in ("auto", "cpu", "cuda"):
        raise DeviceUnavailableError(f"unknown device '{requested}'")
    if requested == "cpu" or not cuda:
        return torch.device("cpu"), "fp32"
    device = torch.device("cuda")
    bf16 = torch.cuda.is_bf16_supported()
    if mixed_precision == "no":
        return device, "fp32"
    if mixed_precision == "fp16":
        return device, "fp16"
    if mixed_precision == "bf16":
        if not bf16:
            raise DeviceUnavailableError("bf16 was requested but this GPU does not support it")
        return device, "bf16"
    return device, "bf16" if bf16 else "fp16"


def autocast_dtype(precision: Precision) -> torch.dtype | None:
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)

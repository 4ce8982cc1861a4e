"""Epoch checkpoints: one safetensors file, the non-tensor state as JSON in its metadata.

No pickle anywhere, so loading a checkpoint cannot execute code. The file holds the
model, optimizer, scheduler and GradScaler states, every RNG state, the loop state
(epoch, step, best so far, early-stopping counter, history) and the best epoch's
weights when they differ from the current ones. A fingerprint of the configuration
refuses a checkpoint from a different job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from apl.atomic import atomic_file
from apl.errors import CheckpointError
from apl.metrics import EpochMetrics
from apl.training.seeding import capture_rng, restore_rng

FORMAT = "aplserve-checkpoint"
VERSION = 1


@dataclass
class LoopState:
    """Everything about the run's position that is not a module's state."""

    epoch: int = 0
    step: int = 0
    history: list[EpochMetrics] = field(default_factory=list)
    best: EpochMetrics | None = None
    #: CPU copy of the best epoch's model weights.
    best_weights: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    early_stopped: bool = False
    elapsed_s: float = 0.0


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the weights (safe to keep while training goes on)."""
    state = module.state_dict()
    return {key: value.detach().to("cpu", copy=True).contiguous() for key, value in state.items()}


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return {"param_groups": state["param_groups"], "scalars": scalars}, tensors


def _unflatten_optimizer(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    path: Path,
    *,
    fingerprint: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    state: LoopState,
) -> None:
    """Write the checkpoint atomically (temp file, fsync, rename)."""
    rng_meta, rng_tensors = capture_rng()
    optimizer_meta, optimizer_tensors = _flatten_optimizer(optimizer.state_dict())
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in cpu_state(model).items()}
    best_is_current = state.best is not None and state.best.epoch == state.epoch
    if state.best_weights is not None and not best_is_current:
        tensors |= {f"best.{k}": v for k, v in state.best_weights.items()}
    tensors |= optimizer_tensors | rng_tensors
    # LambdaLR stores None for plain-function lambdas, so the whole state is JSON.
    scheduler_state = scheduler.state_dict()
    meta = {
        "fingerprint": fingerprint,
        "optimizer": optimizer_meta,
        "scheduler": scheduler_state,
        "scaler": scaler.state_dict(),
        "rng": rng_meta,
        "loop": {
            "epoch": state.epoch,
            "step": state.step,
            "history": [m.as_dict() for m in state.history],
            "best": state.best.as_dict() if state.best else None,
            "best_is_current": best_is_current,
            "bad_epochs": state.bad_epochs,
            "early_stopped": state.early_stopped,
            "elapsed_s": state.elapsed_s,
        },
    }
    metadata = {"format": FORMAT, "version": str(VERSION), "state": json.dumps(meta)}
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


@dataclass
class Checkpoint:
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]


def read_checkpoint(path: Path) -> Checkpoint:
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except Exception as exc:  # a truncated or foreign file
        raise CheckpointError("the checkpoint file cannot be read") from exc
    if metadata.get("format") != FORMAT or metadata.get("version") != str(VERSION):
        raise CheckpointError("the file is not an aplserve checkpoint of a supported version")
    return Checkpoint(meta=json.loads(metadata["state"]), tensors=tensors)


def restore_checkpoint(
    checkpoint: Checkpoint,
    *,
    fingerprint: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
) -> LoopState:
    """Load every state into the live objects (RNGs included) and return the loop state."""
    meta, tensors = checkpoint.meta, checkpoint.tensors
    if meta["fingerprint"] != fingerprint:
        raise CheckpointError("the checkpoint belongs to a different job configuration or dataset")
    weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(weights, strict=True)
    optimizer.load_state_dict(_unflatten_optimizer(meta["optimizer"], tensors))
    scheduler.load_state_dict(meta["scheduler"])
    if meta["scaler"]:
        scaler.load_state_dict(meta["scaler"])
    restore_rng(meta["rng"], tensors)
    loop = meta["loop"]
    best = EpochMetrics.from_dict(loop["best"]) if loop["best"] else None
    if loop["best_is_current"]:
        best_weights: dict[str, torch.Tensor] | None = {k: v.clone() for k, v in weights.items()}
    else:
        stored = {k.removeprefix("best."): v for k, v in tensors.items() if k.startswith("best.")}
        best_weights = stored or None
    return LoopState(
        epoch=int(loop["epoch"]),
        step=int(loop["step"]),
        history=[EpochMetrics.from_dict(m) for m in loop["history"]],
        best=best,
        best_weights=best_weights,
        bad_epochs=int(loop["bad_epochs"]),
        early_stopped=bool(loop["early_stopped"]),
        elapsed_s=float(loop["elapsed_s"]),
    )

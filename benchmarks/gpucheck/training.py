"""Training section: steps/s of each built-in architecture in fp32 and bf16 autocast, and a short run.

Three figures per model and precision:

- `train`: optimizer steps per second through `apl.training.train` (data loading, autocast,
  the apl loss, backward, clipping, AdamW, the scheduler and the loop's per-step loss
  reads), timed by a callback after warm-up steps: what a job gets.
- `compute`: the same model, loss, optimizer and autocast on a batch already on the device,
  i.e. the loop body without data loading and without the loop's host syncs.
- `loader`: samples per second of the training DataLoader alone (image decoding and
  augmentation in worker processes; text tokenization in-process, as the loop does it).

When `train` is far below `compute` and close to `loader`, the run is input-bound and the
bf16/fp32 ratio says little about the GPU.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gpucheck.plan import Deadline, Plan
from gpucheck.synthetic import (
    MINILM_SHAPE,
    NUM_LABELS,
    TINY_SHAPE,
    write_image_dataset,
    write_random_bert,
    write_text_dataset,
)
from gpucheck.timing import median, synchronize

#: (row name, modality, base-model name used for training; `hf:` is filled in at run time).
MODELS = (
    ("minilm-l6", "text", ""),
    ("mobilenetv2-100", "image", "timm:mobilenetv2_100"),
    ("efficientnet-lite0", "image", "timm:tf_efficientnet_lite0"),
)
#: Row label -> Hyperparameters.mixed_precision.
PRECISIONS = {"fp32": "no", "bf16": "bf16"}
GOAL_RATIO = 2.0
VAL_FRACTION = 0.05
LEARNING_RATE = {"text": 5e-4, "image": 1e-3}


@dataclass
class Workspace:
    """Datasets and the text encoder, written once and shared by every run of the section."""

    root: Path
    text_model: str
    throughput: dict[str, Path]
    converge: dict[str, Path]


def samples_for(batch: int, steps: int) -> int:
    """Enough samples that one epoch's training split holds `steps` full batches."""
    return math.ceil(batch * steps / (1 - VAL_FRACTION)) + 2


def prepare(plan: Plan, root: Path) -> Workspace:
    steps = plan.warmup_steps + plan.timed_steps + 1
    stored = max(32, plan.image_size // 2)  # decoded fast, resized up by the training transform
    return Workspace(
        root=root,
        text_model=f"hf:{write_random_bert(root / 'bert-random', text_shape(plan))}",
        throughput={
            "text": write_text_dataset(root / "text", samples_for(plan.text_batch, steps), plan.text_words),
            "image": write_image_dataset(root / "image", samples_for(plan.image_batch, steps), stored),
        },
        converge={
            "text": write_text_dataset(root / "text-small", plan.converge_samples, plan.text_words, seed=1),
            "image": write_image_dataset(root / "image-small", plan.converge_samples, stored, seed=1),
        },
    )


def base_model_of(name: str, workspace: Workspace) -> str:
    source = dict((row, base) for row, _, base in MODELS)[name]
    return source or workspace.text_model


def _hyperparameters(plan: Plan, modality: str, batch: int, mixed: str, epochs: int = 1) -> Any:
    from apl.spec import Hyperparameters

    return Hyperparameters(
        epochs=epochs,
        batch_size=batch,
        learning_rate=LEARNING_RATE[modality],
        val_fraction=VAL_FRACTION,
        image_size=plan.image_size,
        max_length=plan.max_length,
        mixed_precision=mixed,
        seed=0,
    )


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0


def through_train(
    plan: Plan, base_model: str, dataset: Path, modality: str, batch: int, mixed: str
) -> dict[str, Any]:
    """Steps/s of `apl.training.train` itself: the median interval between steps after warm-up."""
    from apl.spec import LossSpec
    from apl.training import TrainConfig, TrainerCallback, train

    marks: list[float] = []
    wanted = plan.warmup_steps + plan.timed_steps

    class StepTimer(TrainerCallback):
        def on_step_end(self, progress: Any) -> None:
            marks.append(time.perf_counter())

        def should_stop(self) -> bool:
            return len(marks) >= wanted

    device = torch.device(plan.device)
    _peak_reset(device)
    config = TrainConfig(
        dataset,
        base_model,
        loss=LossSpec(name="apl"),
        hyperparameters=_hyperparameters(plan, modality, batch, mixed),
        device=plan.device,  # type: ignore[arg-type]
        num_workers=plan.num_workers if modality == "image" else 0,
    )
    result = train(config, [StepTimer()])
    timed = marks[plan.warmup_steps - 1 :]
    step_s = median([b - a for a, b in itertools.pairwise(timed)])
    return {
        "precision": result.precision,
        "batch": batch,
        "steps": len(timed) - 1,
        "steps_per_s": 1.0 / step_s,
        "samples_per_s": batch / step_s,
        "peak_gib": _peak_gib(device),
    }


def synthetic_batch(built: Any, batch: int, plan: Plan, device: torch.device) -> dict[str, torch.Tensor]:
    """A batch of the model's own input form, already on the device."""
    if built.modality == "image":
        return {"pixel_values": torch.randn(batch, 3, plan.image_size, plan.image_size, device=device)}
    vocab = int(built.tokenizer.vocab_size)
    length = min(plan.max_length, plan.text_words + 2)  # what the collator pads the dataset's texts to
    ids = torch.randint(len(built.tokenizer.all_special_ids), vocab, (batch, length), device=device)
    return {
        "input_ids": ids,
        "token_type_ids": torch.zeros_like(ids),
        "attention_mask": torch.ones_like(ids),
    }


def compute_steps(plan: Plan, built: Any, batch: int, mixed: str) -> dict[str, Any]:
    """The loop body on a device-resident batch: autocast forward, apl loss, backward, clip, AdamW."""
    from apl.losses import build_loss
    from apl.spec import LossSpec
    from apl.training.device import autocast_dtype, resolve_device
    from apl.training.schedule import build_optimizer

    device, precision = resolve_device(plan.device, mixed)
    model = built.module.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(model, 1e-4, 0.01)
    loss_fn = build_loss(LossSpec(name="apl"), reduction="sum")
    inputs = synthetic_batch(built, batch, plan, device)
    targets = (torch.rand(batch, NUM_LABELS, device=device) < 0.25).float()
    dtype = autocast_dtype(precision)

    def autocast() -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def step() -> None:
        with autocast():
            logits = model(**inputs)
        loss = loss_fn(logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        (loss / batch).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    _peak_reset(device)
    times = _timed(step, plan.warmup_steps, plan.timed_steps, device)
    step_s = median(times)
    return {
        "precision": precision,
        "batch": batch,
        "steps_per_s": 1.0 / step_s,
        "samples_per_s": batch / step_s,
        "peak_gib": _peak_gib(device),
    }


def _timed(step: Callable[[], Any], warmup: int, steps: int, device: torch.device) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def loader_rate(plan: Plan, built: Any, dataset: Path, batch: int) -> float:
    """Samples/s of the training input pipeline alone (first batch, the workers' start, not counted)."""
    from torch.utils.data import DataLoader

    from apl.data import (
        ImageDataset,
        TextCollator,
        TextDataset,
        build_transform,
        collate_images,
        load_stored_dataset,
    )

    stored = load_stored_dataset(dataset)
    workers = 0
    if built.modality == "image":
        data: Any = ImageDataset(
            stored.inputs, stored.targets, build_transform(built.preprocessing, train=True)
        )
        collate: Any = collate_images
        workers = plan.num_workers
    else:
        data = TextDataset(stored.inputs, stored.targets)
        collate = TextCollator(built.tokenizer, int(built.preprocessing["max_length"]))
    loader = DataLoader(data, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=collate)
    batches = iter(loader)
    next(batches)
    start, seen = time.perf_counter(), 0
    for _ in range(plan.warmup_steps + plan.timed_steps - 1):
        _, targets = next(batches)
        seen += len(targets)
    return seen / (time.perf_counter() - start)


def _halving(measure: Callable[[int], dict[str, Any]], batch: int) -> dict[str, Any]:
    """Run `measure(batch)`; on CUDA out-of-memory retry once at half the batch (the row says which).

    The retry happens after the except block: until the exception is dropped, its traceback
    keeps the failed run's model and activations alive.
    """
    try:
        return measure(batch)
    except torch.cuda.OutOfMemoryError:
        pass
    gc.collect()
    torch.cuda.empty_cache()
    return {**measure(batch // 2), "note": f"out of memory at batch {batch}"}


def text_shape(plan: Plan) -> dict[str, int]:
    return TINY_SHAPE if plan.quick else MINILM_SHAPE


def _text_architecture(plan: Plan) -> str:
    shape = text_shape(plan)
    size = f"{shape['num_hidden_layers']} layers x {shape['hidden_size']}"
    return f"random-init BERT, {size}" + (" (quick: not MiniLM's 6 x 384)" if plan.quick else " (MiniLM-L6)")


def measure_model(plan: Plan, name: str, modality: str, workspace: Workspace) -> dict[str, Any]:
    """Every throughput figure of one architecture: train and compute in fp32 and bf16, and the loader."""
    from apl.models import build_model

    base_model = base_model_of(name, workspace)
    dataset = workspace.throughput[modality]
    batch = plan.text_batch if modality == "text" else plan.image_batch
    built = build_model(base_model, NUM_LABELS, image_size=plan.image_size, max_length=plan.max_length)
    row: dict[str, Any] = {
        "model": name,
        "architecture": base_model if modality == "image" else _text_architecture(plan),
        "modality": modality,
        "input": f"{plan.image_size} px"
        if modality == "image"
        else f"{plan.text_words} words, max_length {plan.max_length}",
        "loader_samples_per_s": loader_rate(plan, built, dataset, batch),
        "compute": {},
        "train": {},
    }
    for label, mixed in PRECISIONS.items():
        row["compute"][label] = _halving(lambda b, mixed=mixed: compute_steps(plan, built, b, mixed), batch)
    for label, mixed in PRECISIONS.items():
        row["train"][label] = _halving(
            lambda b, mixed=mixed: through_train(plan, base_model, dataset, modality, b, mixed), batch
        )
    for kind in ("train", "compute"):
        fp32, bf16 = row[kind]["fp32"], row[kind]["bf16"]
        row[f"ratio_{kind}"] = bf16["samples_per_s"] / fp32["samples_per_s"]
    return row


def converge(plan: Plan, name: str, modality: str, workspace: Workspace) -> tuple[dict[str, Any], Any]:
    """A few epochs at the default precision (bf16 autocast on CUDA): the loss falls and stays finite.

    "Falls": the last epoch's mean training loss is below the first's. Required in the full
    run; the quick run's couple of steps only have to stay finite.
    """
    from apl.spec import LossSpec
    from apl.training import TrainConfig, train

    hp = _hyperparameters(plan, modality, plan.converge_batch, "auto", epochs=plan.converge_epochs)
    hp = hp.model_copy(update={"image_size": plan.converge_image_size, "val_fraction": 0.25})
    config = TrainConfig(
        workspace.converge[modality],
        base_model_of(name, workspace),
        loss=LossSpec(name="apl"),
        hyperparameters=hp,
        device=plan.device,  # type: ignore[arg-type]
        num_workers=plan.num_workers if modality == "image" else 0,
    )
    started = time.perf_counter()
    result = train(config)
    losses = [m.train_loss for m in result.history]
    finite = all(math.isfinite(v) for m in result.history for v in (m.train_loss, m.val_loss))
    falls = len(losses) >= 2 and losses[-1] < losses[0]
    summary = {
        "model": name,
        "precision": result.precision,
        "epochs": result.epochs_completed,
        "train_loss": losses,
        "val_loss": [m.val_loss for m in result.history],
        "map": result.best_metrics.map if result.best_metrics else float("nan"),
        "seconds": time.perf_counter() - started,
        "finite": finite,
        "falls": falls,
        # One or two CPU steps of a random-init network show no trend; the dry run checks finiteness.
        "ok": finite and (falls or plan.quick),
    }
    return summary, result


def goals(plan: Plan, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """bf16 autocast at least twice the fp32 throughput through `apl.training` (judged on CUDA only)."""
    return [
        {
            "name": f"training bf16/fp32 {row['model']}",
            "target": f">= {GOAL_RATIO:.1f}x",
            "measured": row["ratio_train"],
            "met": (row["ratio_train"] >= GOAL_RATIO) if plan.device == "cuda" else None,
        }
        for row in rows
    ]


def run(plan: Plan, deadline: Deadline, root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The training section, and the trained results of the short runs (the serving section uses them)."""
    workspace = prepare(plan, root)
    rows: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    results: dict[str, Any] = {}
    skipped: list[str] = []
    for name, modality, _ in MODELS:
        if not deadline.allows(90.0):  # one model's figures and short run take about a minute on an H200
            skipped.append(f"{name}: time budget spent")
            continue
        rows.append(measure_model(plan, name, modality, workspace))
        summary, result = converge(plan, name, modality, workspace)
        runs.append(summary)
        results[name] = result
    section = {
        "rows": rows,
        "short_runs": runs,
        "goals": goals(plan, rows),
        "checks_passed": all(r["ok"] for r in runs) and not skipped,
        "skipped": skipped,
    }
    return section, {"results": results, "workspace": workspace}

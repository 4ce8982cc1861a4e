"""The training loop: one function, hooks for the worker, checkpoints for resuming.

Losses are summed over labels and batch (`build_loss(..., reduction="sum")`); the
update uses that sum divided by the batch size, and the reported train and
validation losses are the epoch's sum divided by its number of samples, i.e. the
per-sample loss summed over labels. The best epoch is the one with the highest
validation mAP (ties: lower validation loss), and its weights are what the result
holds.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from apl.catalog import UnknownBaseModel, resolve_base_model
from apl.data import (
    ImageDataset,
    StoredDataset,
    TextCollator,
    TextDataset,
    build_transform,
    collate_images,
    load_stored_dataset,
    split_indices,
)
from apl.errors import DatasetError, ModelUnavailableError, TrainingDivergedError
from apl.metrics import EpochMetrics, score_validation
from apl.models import BuiltModel, build_model
from apl.training.callbacks import CallbackList, Progress, TrainerCallback, TrainInfo
from apl.training.checkpoint import LoopState, cpu_state, read_checkpoint, restore_checkpoint, save_checkpoint
from apl.training.config import TrainConfig, TrainResult
from apl.training.device import Precision, autocast_dtype, resolve_device
from apl.training.schedule import build_optimizer, warmup_cosine
from apl.training.seeding import epoch_seed, seed_everything, seed_worker

Batch = tuple[dict[str, torch.Tensor], torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Consecutive non-finite training losses tolerated (fp16 overflow) before declaring divergence.
MAX_NONFINITE_STEPS = 10


class _Stopped(Exception):
    """Internal: a callback asked to stop in the middle of an evaluation."""


def _loaders(
    config: TrainConfig, built: BuiltModel, train_set: StoredDataset, val_set: StoredDataset, pin: bool
) -> tuple[DataLoader[Any], DataLoader[Any], torch.Generator]:
    hp = config.hyperparameters
    generator = torch.Generator()
    # A lone last sample breaks BatchNorm in training mode; drop it rather than fail.
    drop_last = len(train_set) % hp.batch_size == 1 and len(train_set) > 1
    common: dict[str, Any] = {"batch_size": hp.batch_size, "pin_memory": pin}
    if built.modality == "text":
        collate: Callable[..., Batch] = TextCollator(built.tokenizer, int(built.preprocessing["max_length"]))
        train_data: Any = TextDataset(train_set.inputs, train_set.targets)
        val_data: Any = TextDataset(val_set.inputs, val_set.targets)
        workers = 0
    else:
        train_data = ImageDataset(
            train_set.inputs, train_set.targets, build_transform(built.preprocessing, train=True)
        )
        val_data = ImageDataset(
            val_set.inputs, val_set.targets, build_transform(built.preprocessing, train=False)
        )
        collate = collate_images
        workers = config.num_workers
    extra: dict[str, Any] = {"num_workers": workers, "collate_fn": collate}
    if workers:
        extra["worker_init_fn"] = seed_worker
    train_loader = DataLoader(
        train_data, shuffle=True, drop_last=drop_last, generator=generator, **common, **extra
    )
    val_loader = DataLoader(val_data, shuffle=False, **common, **extra)
    return train_loader, val_loader, generator


def _to_device(batch: Batch, device: torch.device) -> Batch:
    inputs, targets = batch
    moved = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
    return moved, targets.to(device, non_blocking=True)


def _autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager[Any]:
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _evaluate(
    model: nn.Module,
    loader: DataLoader[Any],
    loss_fn: LossFn,
    device: torch.device,
    precision: Precision,
    callbacks: CallbackList,
) -> tuple[float, np.ndarray, np.ndarray]:
    """(per-sample validation loss, probabilities, targets); raises _Stopped on cancel."""
    model.eval()
    total, count = 0.0, 0
    probs: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    with torch.inference_mode():
        for batch in loader:
            if callbacks.should_stop():
                raise _Stopped
            inputs, target = _to_device(batch, device)
            with _autocast(device, precision):
                logits = model(**inputs)
            logits = logits.float()
            total += float(loss_fn(logits, target))
            count += len(target)
            probs.append(torch.sigmoid(logits).cpu().numpy())
            targets.append(target.cpu().numpy())
    return total / max(count, 1), np.concatenate(probs), np.concatenate(targets)


def _fingerprint(config: TrainConfig, dataset: StoredDataset, train_idx: np.ndarray) -> dict[str, Any]:
    """What must be equal for a checkpoint to continue this run."""
    return {
        "base_model": config.base_model,
        "loss": config.loss.model_dump(mode="json"),
        "hyperparameters": config.hyperparameters.model_dump(mode="json"),
        "labels": dataset.labels,
        "num_samples": len(dataset),
        "train_indices_sum": int(train_idx.sum()),
        "num_train": len(train_idx),
    }


def _is_better(candidate: EpochMetrics, best: EpochMetrics | None) -> bool:
    if best is None:
        return True
    if candidate.map != best.map:
        return candidate.map > best.map
    return candidate.val_loss < best.val_loss


def train(config: TrainConfig, callbacks: Sequence[TrainerCallback] = ()) -> TrainResult:
    """Train `config.base_model` on `config.dataset_dir`; see the module docstring for the rules.

    Raises an `apl.errors.AplError` subclass for every expected failure (bad data,
    unavailable model or device, divergence, mismatched checkpoint).
    """
    from apl.losses import build_loss

    hooks = CallbackList(callbacks)
    hp = config.hyperparameters
    device, precision = resolve_device(config.device, hp.mixed_precision)
    dataset = load_stored_dataset(config.dataset_dir)
    try:
        modality = resolve_base_model(config.base_model).modality
    except UnknownBaseModel as exc:
        raise ModelUnavailableError(str(exc)) from exc
    if modality != dataset.modality:
        raise DatasetError(f"the base model expects {modality} data but the dataset holds {dataset.modality}")
    train_idx, val_idx = split_indices(dataset.targets, hp.val_fraction, hp.seed)
    train_set, val_set = dataset.subset(train_idx), dataset.subset(val_idx)
    if len(train_set) < 2:
        raise DatasetError("at least 2 training samples are needed; the dataset is too small to split")

    seed_everything(hp.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
    built = build_model(
        config.base_model,
        len(dataset.labels),
        image_size=hp.image_size,
        max_length=hp.max_length,
        allow_download=config.allow_download,
    )
    model = built.module.to(device)
    loss_fn: LossFn = build_loss(config.loss, reduction="sum")
    train_loader, val_loader, generator = _loaders(config, built, train_set, val_set, device.type == "cuda")
    steps_per_epoch = len(train_loader)
    total_steps = hp.epochs * steps_per_epoch
    optimizer = build_optimizer(model, hp.learning_rate, hp.weight_decay)
    scheduler = warmup_cosine(optimizer, round(hp.warmup_fraction * total_steps), total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    fingerprint = _fingerprint(config, dataset, train_idx)

    state = LoopState()
    if config.resume_from is not None:
        state = restore_checkpoint(
            read_checkpoint(config.resume_from),
            fingerprint=fingerprint,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
        )
    hooks.call(
        "on_train_begin",
        TrainInfo(
            labels=list(dataset.labels),
            num_train=len(train_set),
            num_val=len(val_set),
            epochs=hp.epochs,
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
            start_epoch=state.epoch,
            device=str(device),
            precision=precision,
            base_model=config.base_model,
            modality=dataset.modality,
        ),
    )
    started = time.monotonic() - state.elapsed_s
    stopped = False
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        for epoch in range(state.epoch + 1, hp.epochs + 1):
            if state.early_stopped:
                break
            model.train()
            generator.manual_seed(epoch_seed(hp.seed, epoch))
            loss_sum, seen, nonfinite = 0.0, 0, 0
            for batch in train_loader:
                if hooks.should_stop():
                    raise _Stopped
                inputs, targets = _to_device(batch, device)
                with _autocast(device, precision):
                    logits = model(**inputs)
                loss = loss_fn(logits.float(), targets)
                optimizer.zero_grad(set_to_none=True)
                if not torch.isfinite(loss):
                    nonfinite += 1
                    if nonfinite >= MAX_NONFINITE_STEPS or precision != "fp16":
                        raise TrainingDivergedError("the training loss became NaN or infinite")
                else:
                    nonfinite = 0
                    scaler.scale(loss / len(targets)).backward()  # type: ignore[no-untyped-call]
                    if hp.grad_clip_norm is not None:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(params, hp.grad_clip_norm)
                    scaler.step(optimizer)
                    scaler.update()
                    loss_sum += float(loss.detach())
                    seen += len(targets)
                scheduler.step()
                state.step += 1
                progress = Progress(epoch, hp.epochs, state.step, total_steps, loss_sum / max(seen, 1))
                hooks.call("on_step_end", progress)
            if hooks.should_stop():
                raise _Stopped
            try:
                val_loss, probs, val_targets = _evaluate(model, val_loader, loss_fn, device, precision, hooks)
                scores = score_validation(probs, val_targets, dataset.labels)
            except ValueError as exc:
                raise TrainingDivergedError("the validation predictions became NaN or infinite") from exc
            train_loss = loss_sum / max(seen, 1)
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                raise TrainingDivergedError("the loss became NaN or infinite")
            metrics = EpochMetrics(
                epoch=epoch,
                step=state.step,
                train_loss=train_loss,
                val_loss=val_loss,
                map=scores.map,
                micro_f1=scores.micro_f1,
                macro_f1=scores.macro_f1,
                per_class_ap=scores.per_class_ap,
                time_s=time.monotonic() - started,
                thresholds=scores.thresholds,
                fallback_labels=scores.fallback_labels,
            )
            # Patience counts epochs without a strictly higher mAP; the kept weights also
            # prefer a lower validation loss at equal mAP (mAP saturates on easy data).
            state.bad_epochs = (
                0 if state.best is None or metrics.map > state.best.map else state.bad_epochs + 1
            )
            if _is_better(metrics, state.best):
                state.best, state.best_weights = metrics, cpu_state(model)
            state.history.append(metrics)
            patience = hp.early_stopping_patience
            state.early_stopped = patience is not None and state.bad_epochs >= patience and epoch < hp.epochs
            state.epoch = epoch
            state.elapsed_s = time.monotonic() - started
            hooks.call("on_evaluate", metrics)
            if config.checkpoint_path is not None:
                save_checkpoint(
                    config.checkpoint_path,
                    fingerprint=fingerprint,
                    model=model,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    scaler=scaler,
                    state=state,
                )
                hooks.call("on_checkpoint", config.checkpoint_path, epoch)
    except _Stopped:
        stopped = True

    if state.best_weights is not None:
        model.load_state_dict(state.best_weights)
    model.eval()
    best = state.best
    result = TrainResult(
        config=config,
        model=built,
        labels=list(dataset.labels),
        thresholds=dict(best.thresholds) if best else dict.fromkeys(dataset.labels, 0.5),
        fallback_labels=list(best.fallback_labels) if best else list(dataset.labels),
        best_metrics=best,
        history=list(state.history),
        stopped=stopped,
        early_stopped=state.early_stopped,
        epochs_completed=state.epoch,
        device=str(device),
        precision=precision,
    )
    hooks.call("on_train_end", result)
    return result

"""The training loop: hooks for the worker, checkpoints for resuming.

`train` builds a `_Run` (`_setup`: data split, model, loaders, optimizer, resume) and
drives it epoch by epoch (`run_epoch`, then `evaluate`) to `finish`.

Losses are summed over labels and batch (`build_loss(..., reduction="sum")`); the
update uses that sum divided by the batch size, and the reported train and
validation losses are the epoch's sum divided by its number of samples, i.e. the
per-sample loss summed over labels. The best epoch is the one with the highest
validation mAP (ties: lower validation loss), and its weights are what the result
holds. `finish` then calibrates the best model and chooses its thresholds on the
validation split (`apl.evaluation.finalize`: the job's calibration and decision policy).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
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
    job_split,
    load_stored_dataset,
    unannotated_labels,
)
from apl.decisions import FALLBACK_THRESHOLD
from apl.errors import DatasetError, ModelUnavailableError, TrainingDivergedError
from apl.evaluation import Finalized, finalize
from apl.metrics import EpochMetrics, score_validation
from apl.models import BuiltModel, build_model
from apl.predictions import SplitPredictions
from apl.spec import Hyperparameters
from apl.training.baselines import (
    PROBE_FAILURES,
    BaselineInputs,
    BaselinesStopped,
    ProbeStart,
    fit_probe,
    linear_head,
    load_head,
    with_baselines,
)
from apl.training.budget import Budget, resolve_budget, stop_message, stop_reason, warmup_steps
from apl.training.callbacks import CallbackList, Progress, TrainerCallback, TrainInfo
from apl.training.checkpoint import LoopState, cpu_state, read_checkpoint, restore_checkpoint, save_checkpoint
from apl.training.config import TrainConfig, TrainResult
from apl.training.device import Precision, autocast_dtype, resolve_device
from apl.training.distributed import Parallel, local_batch_size, process_group, rank_device
from apl.training.rounds import RoundSlice, in_rounds, steps_after
from apl.training.schedule import build_optimizer, warmup_cosine
from apl.training.scoring import finalized_fields, held_out_predictions, validation_predictions
from apl.training.seeding import epoch_seed, seed_everything, seed_worker

Batch = tuple[dict[str, torch.Tensor], torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Consecutive non-finite training losses tolerated (fp16 overflow) before declaring divergence.
MAX_NONFINITE_STEPS = 10


class _Stopped(Exception):
    """Internal: a callback asked to stop in the middle of an evaluation."""


def _collate(config: TrainConfig, built: BuiltModel) -> tuple[Callable[..., Batch], int]:
    """The batch collation of the model's modality and its DataLoader worker count."""
    if built.modality == "text":
        return TextCollator(built.tokenizer, int(built.preprocessing["max_length"])), 0
    return collate_images, config.num_workers


def _torch_data(built: BuiltModel, data: StoredDataset, *, train: bool) -> Any:
    if built.modality == "text":
        return TextDataset(data.inputs, data.targets)
    return ImageDataset(data.inputs, data.targets, build_transform(built.preprocessing, train=train))


def _eval_loader(config: TrainConfig, built: BuiltModel, data: StoredDataset, pin: bool) -> DataLoader[Any]:
    """An ordered, unshuffled loader: how validation and the test split are predicted."""
    collate, workers = _collate(config, built)
    extra: dict[str, Any] = {"worker_init_fn": seed_worker} if workers else {}
    return DataLoader(
        _torch_data(built, data, train=False),
        shuffle=False,
        batch_size=config.hyperparameters.batch_size,
        pin_memory=pin,
        num_workers=workers,
        collate_fn=collate,
        **extra,
    )


def _loaders(
    config: TrainConfig,
    built: BuiltModel,
    train_set: StoredDataset,
    val_set: StoredDataset,
    pin: bool,
    parallel: Parallel,
) -> tuple[DataLoader[Any], DataLoader[Any], torch.Generator]:
    """The training loader (this rank's shard of each epoch's order) and the validation loader."""
    hp = config.hyperparameters
    generator = torch.Generator()
    batch_size = local_batch_size(hp.batch_size, parallel.world_size)
    data = _torch_data(built, train_set, train=True)
    sampler = parallel.train_sampler(data, generator)
    per_rank = len(sampler) if sampler is not None else len(train_set)
    # A lone last sample breaks BatchNorm in training mode; drop it rather than fail.
    drop_last = per_rank % batch_size == 1 and per_rank > 1
    collate, workers = _collate(config, built)
    extra: dict[str, Any] = {"worker_init_fn": seed_worker} if workers else {}
    train_loader = DataLoader(
        data,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=drop_last,
        generator=generator,
        batch_size=batch_size,
        pin_memory=pin,
        num_workers=workers,
        collate_fn=collate,
        **extra,
    )
    return train_loader, _eval_loader(config, built, _shard(parallel, val_set), pin), generator


def _shard(parallel: Parallel, data: StoredDataset) -> StoredDataset:
    """This rank's contiguous part of an ordered split (the whole split for one process)."""
    return data if parallel.world_size == 1 else data.subset(parallel.shard(len(data)))


def _joined(parts: Sequence[_Outputs | None]) -> _Outputs:
    """The ranks' outputs on their shards as one process's outputs on the whole split."""
    present = [part for part in parts if part is not None]
    count = sum(len(part.targets) for part in present)
    loss = sum(part.loss * len(part.targets) for part in present) / max(count, 1)
    return _Outputs(
        loss,
        np.concatenate([p.logits for p in present]),
        np.concatenate([p.probs for p in present]),
        np.concatenate([p.targets for p in present]),
    )


def _to_device(batch: Batch, device: torch.device) -> Batch:
    inputs, targets = batch
    moved = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
    return moved, targets.to(device, non_blocking=True)


def _autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager[Any]:
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass(frozen=True)
class _Outputs:
    """A model's outputs on one split."""

    loss: float
    logits: np.ndarray
    probs: np.ndarray
    targets: np.ndarray


def _predict(
    model: nn.Module,
    loader: DataLoader[Any],
    loss_fn: LossFn,
    device: torch.device,
    precision: Precision,
    callbacks: CallbackList,
) -> _Outputs:
    """The per-sample loss, logits, probabilities and targets of `model` on `loader`.

    Raises _Stopped on cancel. Split-agnostic so that validation and any later held-out
    split are scored the same way.
    """
    model.eval()
    total, count = 0.0, 0
    raw: list[np.ndarray] = []
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
            raw.append(logits.cpu().numpy())
            probs.append(torch.sigmoid(logits).cpu().numpy())
            targets.append(target.cpu().numpy())
    return _Outputs(
        total / max(count, 1), np.concatenate(raw), np.concatenate(probs), np.concatenate(targets)
    )


def _fingerprint(config: TrainConfig, split: _Split) -> dict[str, Any]:
    """What must be equal for a checkpoint to continue this run."""
    fingerprint: dict[str, Any] = {
        "base_model": config.base_model,
        "loss": config.loss.model_dump(mode="json"),
        # The device count is not part of it: a checkpoint continues on any number of devices.
        "hyperparameters": config.hyperparameters.model_dump(mode="json", exclude={"devices"}),
        "labels": split.dataset.labels,
        "num_samples": len(split.dataset),
        "train_indices_sum": int(split.train_idx.sum()),
        "num_train": len(split.train_idx),
    }
    if split.test_set is not None:  # absent otherwise, so checkpoints of jobs without one still match
        fingerprint["test"] = {"source": split.test_source, "num_samples": len(split.test_set)}
    return fingerprint


def _is_better(candidate: EpochMetrics, best: EpochMetrics | None) -> bool:
    if best is None:
        return True
    if candidate.map != best.map:
        return candidate.map > best.map
    return candidate.val_loss < best.val_loss


@dataclass(frozen=True)
class _Split:
    """The dataset and its seeded train/validation(/test) split (the indices feed the fingerprint)."""

    dataset: StoredDataset
    train_idx: np.ndarray
    train_set: StoredDataset
    val_set: StoredDataset
    #: Scored once, at the end, with the best weights; None when the job holds no test split.
    test_set: StoredDataset | None = None
    #: Positions of the test samples in the dataset they come from.
    test_idx: np.ndarray | None = None
    #: "fraction" (held out of the dataset) or "dataset" (a separate test dataset).
    test_source: str | None = None
    #: Positions of the validation samples in the dataset.
    val_idx: np.ndarray | None = None


def _load_test_dataset(config: TrainConfig, dataset: StoredDataset) -> StoredDataset:
    """The separate test dataset, which must hold the training dataset's labels and modality."""
    assert config.test_dataset_dir is not None
    test = load_stored_dataset(config.test_dataset_dir)
    if test.modality != dataset.modality:
        raise DatasetError(f"the test dataset holds {test.modality} samples, the dataset {dataset.modality}")
    if test.labels != dataset.labels:
        raise DatasetError("the test dataset's labels differ from the training dataset's")
    return test


def _load_split(config: TrainConfig) -> _Split:
    """Load and split the data, failing on data problems before any model is built.

    Building a model can mean a download or a long load, so a wrong modality or a
    dataset too small to split is reported first. A test split comes off before the
    train/validation split (`split_test_indices`), so for one seed it is the same
    whatever the loss.
    """
    hp = config.hyperparameters
    dataset = load_stored_dataset(config.dataset_dir)
    try:
        modality = resolve_base_model(config.base_model).modality
    except UnknownBaseModel as exc:
        raise ModelUnavailableError(str(exc)) from exc
    if modality != dataset.modality:
        raise DatasetError(f"the base model expects {modality} data but the dataset holds {dataset.modality}")
    test_set, source = None, None
    train_idx, val_idx, test_idx = job_split(dataset.targets, hp.val_fraction, hp.seed, config.test_fraction)
    if test_idx is not None:
        test_set, source = dataset.subset(test_idx), "fraction"
    elif config.test_dataset_dir is not None:
        test_set, source = _load_test_dataset(config, dataset), "dataset"
        test_idx = np.arange(len(test_set))
    train_set, val_set = dataset.subset(train_idx), dataset.subset(val_idx)
    if len(train_set) < 2:
        raise DatasetError("at least 2 training samples are needed; the dataset is too small to split")
    blank = unannotated_labels(dataset.targets, train_idx)
    if blank:
        names = ", ".join(repr(dataset.labels[j]) for j in blank[:5])
        raise DatasetError(f"label {names} is unknown on every training sample; nothing to learn it from")
    return _Split(dataset, train_idx, train_set, val_set, test_set, test_idx, source, val_idx)


@dataclass
class _EpochTally:
    """Running training loss of one epoch; skipped (non-finite) steps count in neither sum."""

    loss_sum: float = 0.0
    seen: int = 0
    #: Consecutive non-finite steps, reset by every finite one.
    nonfinite: int = 0

    @property
    def mean(self) -> float:
        """The per-sample training loss so far (0 before the first counted step)."""
        return self.loss_sum / max(self.seen, 1)


@dataclass
class _Run:
    """One training run's live objects and position, built by `_setup`.

    `train` drives it epoch by epoch: `run_epoch` (the optimizer steps), `evaluate`
    (validation, best epoch, early stopping, checkpoint) and `finish` (best weights,
    result). Keeping the steps apart is what lets more of them slot in, e.g. scoring
    the best weights on a held-out test split in `finish`.
    """

    config: TrainConfig
    hooks: CallbackList
    device: torch.device
    precision: Precision
    split: _Split
    built: BuiltModel
    model: nn.Module
    loss_fn: LossFn
    train_loader: DataLoader[Any]
    val_loader: DataLoader[Any]
    #: Drives the training loader's shuffle; reseeded per epoch so a resumed run shuffles alike.
    generator: torch.Generator
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    #: What a checkpoint must match to continue this run (see `_fingerprint`).
    fingerprint: dict[str, Any]
    #: How many epochs at most, and when evidence may stop the run (`apl.training.budget`).
    budget: Budget
    #: Optimizer steps of one pass over the training split (a round trains a share of them).
    pass_steps: int
    state: LoopState = field(default_factory=LoopState)
    #: The best epoch's validation outputs, kept for `finish` (not checkpointed).
    best_outputs: _Outputs | None = None
    #: Monotonic clock origin, shifted back by the time a resumed run had already spent.
    started: float = 0.0
    #: The final model's validation predictions, set by `finish` (None when it was stopped).
    validation: SplitPredictions | None = None
    #: The ranks of a data-parallel run (apl.training.distributed); one process by default.
    parallel: Parallel = field(default_factory=Parallel)
    #: What the training forward goes through: `model`, or DDP around it.
    train_module: nn.Module | None = None
    #: The linear probe the head started from (`head_init: linear_probe`); None otherwise or resumed.
    probe_start: ProbeStart | None = None

    def _should_stop(self) -> bool:
        """The callbacks' stop, agreed by every rank (each asks at the same points)."""
        return self.parallel.agree(self.hooks.should_stop())

    def _eval_hooks(self) -> CallbackList:
        """Stops between prediction batches with one process; ranks stop at agreed points only."""
        return self.hooks if self.parallel.world_size == 1 else CallbackList([])

    def _predict_loader(self, loader: DataLoader[Any]) -> _Outputs:
        """This rank's shard predicted, then every rank's gathered: the whole split's outputs."""
        if self.parallel.world_size == 1:
            return _predict(self.model, loader, self.loss_fn, self.device, self.precision, self.hooks)
        part = None
        if len(loader.dataset):  # type: ignore[arg-type]
            part = _predict(self.model, loader, self.loss_fn, self.device, self.precision, self._eval_hooks())
        return _joined(self.parallel.gather(part))

    @property
    def hp(self) -> Hyperparameters:
        return self.config.hyperparameters

    @property
    def labels(self) -> list[str]:
        return self.split.dataset.labels

    @property
    def total_steps(self) -> int:
        return steps_after(self.budget, self.pass_steps, self.budget.epochs)

    def resume(self, path: Path) -> None:
        """Load a checkpoint of this same configuration into every live object (RNGs included)."""
        self.state = restore_checkpoint(
            read_checkpoint(path),
            fingerprint=self.fingerprint,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
        )

    def begin(self) -> None:
        """Tell the callbacks what is about to run, then start the clock (callback time excluded)."""
        self.hooks.call(
            "on_train_begin",
            TrainInfo(
                labels=list(self.labels),
                num_train=len(self.split.train_set),
                num_val=len(self.split.val_set),
                epochs=self.budget.epochs,
                steps_per_epoch=self.pass_steps,
                total_steps=self.total_steps,
                start_epoch=self.state.epoch,
                device=self.parallel.describe(self.device),
                precision=self.precision,
                base_model=self.config.base_model,
                modality=self.split.dataset.modality,
                start_step=self.state.step,
                rounds_per_epoch=self.budget.rounds_per_epoch,
            ),
        )
        self.started = time.monotonic() - self.state.elapsed_s

    def run_epoch(self, epoch: int) -> float:
        """Train one epoch (or round) and return its per-sample training loss; raises _Stopped on cancel.

        The shuffle is reseeded from (seed, pass) so that an epoch resumed from a checkpoint
        sees the same batches as in an uninterrupted run; a round (`apl.training.budget`)
        trains its share of its pass's order.
        """
        self.model.train()
        rounds = self.budget.rounds_per_epoch
        data_pass = (epoch - 1) // rounds + 1
        self.generator.manual_seed(epoch_seed(self.hp.seed, data_pass))
        if isinstance(self.train_loader.sampler, RoundSlice):
            self.train_loader.sampler.select((epoch - 1) % rounds)
        set_epoch = getattr(self.loss_fn, "set_epoch", None)
        if set_epoch is not None:  # SPLC corrects missing labels from a given epoch on
            set_epoch(data_pass)
        tally = _EpochTally()
        params = [p for p in self.model.parameters() if p.requires_grad]
        last = len(self.train_loader)
        for number, batch in enumerate(self.train_loader, start=1):
            if self._should_stop():
                raise _Stopped
            self._train_step(batch, tally, params)
            self.scheduler.step()
            self.state.step += 1
            progress = Progress(
                epoch,
                self.budget.epochs,
                self.state.step,
                self.total_steps,
                tally.mean,
                round_end=number == last,
            )
            self.hooks.call("on_step_end", progress)
        if self.parallel.world_size > 1:
            loss_sum, seen = self.parallel.total(tally.loss_sum, tally.seen)
            return loss_sum / max(seen, 1)
        return tally.mean

    def _train_step(self, batch: Batch, tally: _EpochTally, params: list[nn.Parameter]) -> None:
        """One optimizer step on `batch`, or a skipped one when fp16 overflowed.

        The update uses the summed loss divided by the batch size. Under fp16 a
        non-finite loss is an overflow the GradScaler recovers from, so up to
        MAX_NONFINITE_STEPS in a row are skipped; in any other precision it is divergence.
        """
        inputs, targets = _to_device(batch, self.device)
        with _autocast(self.device, self.precision):
            logits = (self.train_module or self.model)(**inputs)
        loss = self.loss_fn(logits.float(), targets)
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            tally.nonfinite += 1
            if tally.nonfinite >= MAX_NONFINITE_STEPS or self.precision != "fp16":
                raise TrainingDivergedError("the training loss became NaN or infinite")
            return
        tally.nonfinite = 0
        self.scaler.scale(loss / len(targets)).backward()  # type: ignore[no-untyped-call]
        if self.hp.grad_clip_norm is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(params, self.hp.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        tally.loss_sum += float(loss.detach())
        tally.seen += len(targets)

    def evaluate(self, epoch: int, train_loss: float) -> EpochMetrics:
        """Validate the epoch, update best epoch and early stopping, then checkpoint it.

        `on_evaluate` comes before the checkpoint is written, `on_checkpoint` after it
        is on disk. Raises _Stopped on cancel (checked before and during validation).
        """
        if self._should_stop():
            raise _Stopped
        metrics, outputs = self._validate(epoch, train_loss)
        if self._record(metrics):
            self.best_outputs = outputs
        self.hooks.call("on_evaluate", metrics)
        if self.config.checkpoint_path is not None and self.parallel.is_main:
            self._save_checkpoint(self.config.checkpoint_path, epoch)
        return metrics

    def _validation_outputs(self) -> _Outputs:
        return self._predict_loader(self.val_loader)

    def _validate(self, epoch: int, train_loss: float) -> tuple[EpochMetrics, _Outputs]:
        """The epoch's metrics on the validation split; non-finite numbers mean divergence."""
        try:
            outputs = self._validation_outputs()
            scores = score_validation(outputs.probs, outputs.targets, self.labels)
        except ValueError as exc:
            raise TrainingDivergedError("the validation predictions became NaN or infinite") from exc
        if not (math.isfinite(train_loss) and math.isfinite(outputs.loss)):
            raise TrainingDivergedError("the loss became NaN or infinite")
        metrics = EpochMetrics(
            epoch=epoch,
            step=self.state.step,
            train_loss=train_loss,
            val_loss=outputs.loss,
            map=scores.map,
            micro_f1=scores.micro_f1,
            macro_f1=scores.macro_f1,
            per_class_ap=scores.per_class_ap,
            time_s=time.monotonic() - self.started,
            thresholds=scores.thresholds,
            fallback_labels=scores.fallback_labels,
        )
        return metrics, outputs

    def _record(self, metrics: EpochMetrics) -> bool:
        """Advance the loop state past `metrics.epoch`: history, best epoch, early stopping.

        Returns whether the epoch became the best one.

        Patience counts epochs without a strictly higher mAP; the kept weights also
        prefer a lower validation loss at equal mAP (mAP saturates on easy data).
        The last epoch never counts as early stopped.
        """
        state, epoch = self.state, metrics.epoch
        state.bad_epochs = 0 if state.best is None or metrics.map > state.best.map else state.bad_epochs + 1
        better = _is_better(metrics, state.best)
        if better:
            state.best, state.best_weights = metrics, cpu_state(self.model)
        state.history.append(metrics)
        patience, budget = self.budget.patience, self.budget
        state.early_stopped = (
            patience is not None
            and state.bad_epochs >= patience
            and epoch < budget.epochs
            and state.step >= budget.min_steps
        )
        state.epoch = epoch
        state.elapsed_s = time.monotonic() - self.started
        return better

    def _save_checkpoint(self, path: Path, epoch: int) -> None:
        """Write the epoch's checkpoint atomically, then tell the callbacks it is safe on disk."""
        save_checkpoint(
            path,
            fingerprint=self.fingerprint,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            state=self.state,
        )
        self.hooks.call("on_checkpoint", path, epoch)

    def finish(self, stopped: bool) -> TrainResult:
        """Put the best epoch's weights in the model, finalize it, score it on the test split.

        Finalizing (`apl.evaluation.finalize`: temperatures, the decision policy's thresholds,
        the validation evaluation) needs the final model; then the test split, when the job
        has one, is predicted once with the final model and its decisions: nothing before
        (early stopping, the best epoch, calibration, thresholds) has seen it. A stopped run
        is neither finalized nor tested, since its model is not kept; a cancel during either
        step stops the run like any other. The job's baselines (`apl.training.baselines`) come
        last, unless the config leaves them out (a search trial).
        """
        self._load_best()
        final, test = None, None
        if not stopped and self.state.best is not None:
            try:
                final = self._finalize()
                self.validation = self._validation_predictions(final)
                if self.split.test_set is not None and self.config.score_test:
                    test, evaluation = self._score_test(final)
                    final = replace(final, evaluation=evaluation)
            except _Stopped:
                stopped, final, test = True, None, None
        result = self._result(stopped, final, test)
        if self.config.fit_baselines:
            inputs = _baseline_inputs(self.config, self.split, self.device, self.precision, self.hooks)
            result = with_baselines(replace(inputs, probe_start=self.probe_start), result)
        self.hooks.call("on_train_end", result)
        return result

    def _score_test(self, final: Finalized) -> tuple[SplitPredictions, dict[str, Any]]:
        """The final model on the test split: its calibrated scores, decisions and evaluation.

        The scores are what predict answers (the fitted calibrators applied) and the
        thresholds those the decision policy chose on validation, so the test figures are
        those of the model a user gets. The model's Evaluation document is then the test
        split's (`split: "test"`), a measure no tuning step has seen.
        """
        split = self.split
        assert split.test_set is not None and split.test_idx is not None and split.test_source is not None
        test_set = _shard(self.parallel, split.test_set)
        loader = _eval_loader(self.config, self.built, test_set, self.device.type == "cuda")
        outputs = self._predict_loader(loader)
        try:
            return held_out_predictions(
                outputs.logits,
                outputs.targets,
                self.labels,
                final,
                indices=split.test_idx,
                source=split.test_source,
                label_counts=split.train_set.positive_counts,
                min_labels=self.config.decision.min_labels,
            )
        except ValueError as exc:
            raise TrainingDivergedError("the test predictions became NaN or infinite") from exc

    def _validation_predictions(self, final: Finalized) -> SplitPredictions:
        """The best epoch's validation scores as the final model gives them (`validation_predictions`)."""
        outputs = self.best_outputs or self._validation_outputs()
        assert self.split.val_idx is not None
        return validation_predictions(outputs.logits, outputs.targets, self.labels, final, self.split.val_idx)

    def _load_best(self) -> None:
        """The best epoch's weights (the last ones when no epoch was evaluated), in eval mode."""
        if self.state.best_weights is not None:
            self.model.load_state_dict(self.state.best_weights)
        self.model.eval()

    def _finalize(self) -> Finalized:
        """Calibrate and choose thresholds on the best epoch's validation outputs.

        Those outputs are kept from its evaluation; a run resumed after its best epoch
        scores the validation split once more with the best weights (the same numbers).
        """
        outputs = self.best_outputs or self._validation_outputs()
        try:
            return finalize(
                outputs.logits,
                outputs.targets,
                self.labels,
                self.config.decision,
                self.config.calibration,
                label_counts=self.split.train_set.positive_counts,
            )
        except ValueError as exc:
            raise TrainingDivergedError("the validation logits became NaN or infinite") from exc

    def _result(
        self, stopped: bool, final: Finalized | None, test: SplitPredictions | None = None
    ) -> TrainResult:
        """The TrainResult; without an evaluated epoch every label gets the fallback threshold."""
        best, labels = self.state.best, self.labels
        reason = stop_reason(self.budget, stopped=stopped, early_stopped=self.state.early_stopped)
        thresholds = dict.fromkeys(labels, FALLBACK_THRESHOLD)
        fields: dict[str, Any] = {"thresholds": thresholds, "fallback_labels": list(labels)}
        if final is not None:
            fields = finalized_fields(final, labels)
        elif best is not None:
            fields = {"thresholds": dict(best.thresholds), "fallback_labels": list(best.fallback_labels)}
        return TrainResult(
            config=self.config,
            model=self.built,
            labels=list(labels),
            best_metrics=best,
            history=list(self.state.history),
            stopped=stopped,
            early_stopped=self.state.early_stopped,
            epochs_completed=self.state.epoch,
            device=str(self.device),
            precision=self.precision,
            test=test,
            validation=self.validation if final is not None else None,
            loss_frequencies=self._loss_frequencies(),
            stop_reason=reason,
            stop_message=stop_message(self.budget, reason, self.state.step, best.step if best else None),
            head_init=self._head_init(),
            **fields,
        )

    def _head_init(self) -> str:
        """How the head started: from the linear probe (also when resumed from such a run), or at random."""
        if self.probe_start is not None:
            return "linear_probe"
        resumed = self.config.resume_from is not None and self.hp.head_init == "linear_probe"
        return "linear_probe" if resumed and linear_head(self.built) is not None else "random"

    def _loss_frequencies(self) -> dict[str, Any] | None:
        """What the dbl loss was built from (the training split's counts), for the job to record."""
        if self.config.loss.name != "dbl":
            return None
        counts = self.split.train_set.positive_counts
        return {
            "num_samples": len(self.split.train_set),
            "label_counts": dict(zip(self.labels, counts, strict=True)),
        }


def _setup(config: TrainConfig, hooks: CallbackList, parallel: Parallel | None = None) -> _Run:
    """Build everything a run needs, in a fixed order, and resume it when asked.

    The order is part of reproducibility: the global seed is set after the split and
    before the model's random initialisation, and everything after that draws from the
    RNGs in the same sequence on every run (a resumed run then overwrites them all).
    """
    from apl.losses import build_loss

    hp = config.hyperparameters
    parallel = parallel or Parallel()
    device, precision = resolve_device(config.device, hp.mixed_precision)
    device = rank_device(device, config.distributed)
    split = _load_split(config)
    seed_everything(hp.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
    built = build_model(
        config.base_model,
        len(split.dataset.labels),
        image_size=hp.image_size,
        max_length=hp.max_length,
        allow_download=config.allow_download,
    )
    model = built.module.to(device)
    probe_start = _start_from_probe(config, split, built, device, precision, hooks)
    # Label frequencies for the losses that use them (dbl) come from the training split only.
    train_set = split.train_set
    loss_fn: LossFn = build_loss(
        config.loss, reduction="sum", label_counts=train_set.positive_counts, num_samples=len(train_set)
    )
    pin = device.type == "cuda"
    train_loader, val_loader, generator = _loaders(
        config, built, split.train_set, split.val_set, pin, parallel
    )
    pass_steps = len(train_loader)
    budget = resolve_budget(hp, config.base_model, pass_steps)
    if budget.rounds_per_epoch > 1:
        train_loader = in_rounds(train_loader, budget.rounds_per_epoch)
    total_steps = steps_after(budget, pass_steps, budget.epochs)
    optimizer = build_optimizer(model, hp.learning_rate, hp.weight_decay)
    scheduler = warmup_cosine(optimizer, warmup_steps(hp.warmup_fraction, budget, total_steps), total_steps)
    run = _Run(
        config=config,
        hooks=hooks,
        device=device,
        precision=precision,
        split=split,
        built=built,
        model=model,
        loss_fn=loss_fn,
        train_loader=train_loader,
        val_loader=val_loader,
        generator=generator,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
        fingerprint=_fingerprint(config, split),
        budget=budget,
        pass_steps=pass_steps,
        parallel=parallel,
        # After the optimizer: DDP wraps the same parameters and broadcasts rank 0's at start.
        train_module=parallel.wrap(model, find_unused=built.modality == "text"),
        probe_start=probe_start,
    )
    if config.resume_from is not None:
        run.resume(config.resume_from)
    return run


def train(config: TrainConfig, callbacks: Sequence[TrainerCallback] = ()) -> TrainResult:
    """Train `config.base_model` on `config.dataset_dir`; see the module docstring for the rules.

    Raises an `apl.errors.AplError` subclass for every expected failure (bad data,
    unavailable model or device, divergence, mismatched checkpoint). A cancel
    (a callback's `should_stop`) is not an error: the result says `stopped`.

    With `config.distributed` this process is one rank of a data-parallel group
    (`apl.training.distributed`): only rank 0 calls `callbacks` (metrics, checkpoints,
    the result), and every rank returns the same result.
    """
    device, _ = resolve_device(config.device, config.hyperparameters.mixed_precision)
    with process_group(config.distributed, rank_device(device, config.distributed)) as parallel:
        run = _setup(config, CallbackList(callbacks if parallel.is_main else ()), parallel)
        run.begin()
        stopped = False
        try:
            for epoch in range(run.state.epoch + 1, run.budget.epochs + 1):
                if run.state.early_stopped:
                    break
                train_loss = run.run_epoch(epoch)
                run.evaluate(epoch, train_loss)
        except _Stopped:
            stopped = True
        return run.finish(stopped)


def _start_from_probe(
    config: TrainConfig,
    split: _Split,
    built: BuiltModel,
    device: torch.device,
    precision: Precision,
    hooks: CallbackList,
) -> ProbeStart | None:
    """Fit the linear probe on the pretrained model and make it the head (`head_init: linear_probe`).

    Not for a resumed run (its checkpoint holds the head), nor a model whose head is not one
    Linear layer. A probe that cannot be had, or a cancel meanwhile, leaves the random head:
    the first step then sees the cancel like any other.
    """
    if config.hyperparameters.head_init != "linear_probe" or config.resume_from is not None:
        return None
    try:
        start = fit_probe(_baseline_inputs(config, split, device, precision, hooks), built)
    except (BaselinesStopped, *PROBE_FAILURES):
        return None
    if start is not None:
        load_head(built, start.fit)
    return start


def _baseline_inputs(
    config: TrainConfig, split: _Split, device: torch.device, precision: Precision, hooks: CallbackList
) -> BaselineInputs:
    """What `apl.training.baselines` needs of the run: its splits, device and evaluation loader."""
    pin = device.type == "cuda"
    assert split.val_idx is not None
    return BaselineInputs(
        config=config,
        labels=list(split.dataset.labels),
        train_set=split.train_set,
        val_set=split.val_set,
        val_idx=split.val_idx,
        device=device,
        precision=precision,
        should_stop=hooks.should_stop,
        loader=lambda built, data: _eval_loader(config, built, data, pin),
        test_set=split.test_set,
        test_idx=split.test_idx,
        test_source=split.test_source,
    )

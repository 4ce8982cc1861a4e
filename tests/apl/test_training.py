"""The training loop: learning, callbacks, cancel, determinism, checkpoints and resume."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from apl.data import build_transform, load_stored_dataset, open_image, split_indices
from apl.errors import CheckpointError, DatasetError, DeviceUnavailableError
from apl.metrics import EpochMetrics
from apl.spec import DecisionSpec, Hyperparameters, LossSpec
from apl.training import Progress, StopFlag, TrainConfig, TrainerCallback, TrainInfo, TrainResult, train
from apl.training.device import resolve_device
from tests.apl.conftest import TINY_IMAGE_MODEL


def _config(dataset: Path, model: str, defaults: dict[str, Any], overrides: dict[str, Any]) -> TrainConfig:
    """Hyperparameter overrides go into Hyperparameters, anything else into TrainConfig."""
    fields = Hyperparameters.model_fields
    hp = defaults | {k: v for k, v in overrides.items() if k in fields}
    extra = {k: v for k, v in overrides.items() if k not in fields}
    return TrainConfig(
        dataset_dir=dataset, base_model=model, hyperparameters=Hyperparameters(**hp), device="cpu", **extra
    )


def image_config(dataset: Path, **overrides: Any) -> TrainConfig:
    """An image job as the catalog's image family has it: a random head (`head_init`)."""
    defaults = {"epochs": 2, "batch_size": 8, "learning_rate": 3e-3, "image_size": 32, "seed": 0}
    defaults["head_init"] = "random"
    return _config(dataset, TINY_IMAGE_MODEL, defaults, overrides)


def text_config(dataset: Path, model: str, **overrides: Any) -> TrainConfig:
    defaults = {"epochs": 2, "batch_size": 8, "learning_rate": 1e-2, "max_length": 32, "seed": 0}
    return _config(dataset, model, defaults, overrides)


def same_weights(a: TrainResult, b: TrainResult, atol: float = 0.0) -> bool:
    left, right = a.model.module.state_dict(), b.model.module.state_dict()
    return left.keys() == right.keys() and all(
        torch.allclose(left[k].float(), right[k].float(), rtol=0, atol=atol) for k in left
    )


class Recorder(TrainerCallback):
    """Records every hook call in order."""

    def __init__(self, stop_after_step: int | None = None, stop_after_epoch: int | None = None) -> None:
        self.events: list[tuple[str, Any]] = []
        self.stop_after_step = stop_after_step
        self.stop_after_epoch = stop_after_epoch
        self.stop = False

    def on_train_begin(self, info: TrainInfo) -> None:
        self.events.append(("begin", info))

    def on_step_end(self, progress: Progress) -> None:
        self.events.append(("step", progress))
        if self.stop_after_step is not None and progress.step >= self.stop_after_step:
            self.stop = True

    def on_evaluate(self, metrics: EpochMetrics) -> None:
        self.events.append(("evaluate", metrics))
        if self.stop_after_epoch is not None and metrics.epoch >= self.stop_after_epoch:
            self.stop = True

    def on_checkpoint(self, path: Path, epoch: int) -> None:
        self.events.append(("checkpoint", epoch))

    def on_train_end(self, result: TrainResult) -> None:
        self.events.append(("end", result))

    def should_stop(self) -> bool:
        return self.stop

    def of(self, kind: str) -> list[Any]:
        return [payload for name, payload in self.events if name == kind]


def comparable(history: list[EpochMetrics]) -> list[dict[str, Any]]:
    """Metrics without the wall-clock time."""
    return [{k: v for k, v in dataclasses.asdict(m).items() if k != "time_s"} for m in history]


def assert_histories_close(a: list[EpochMetrics], b: list[EpochMetrics], tol: float = 1e-6) -> None:
    assert len(a) == len(b)
    for left, right in zip(comparable(a), comparable(b), strict=True):
        assert left.keys() == right.keys()
        for key in left:
            if isinstance(left[key], float | dict):
                assert left[key] == pytest.approx(right[key], abs=tol), key
            else:
                assert left[key] == right[key], key


def test_image_model_learns_the_easy_dataset(image_dataset: Path) -> None:
    result = train(image_config(image_dataset, epochs=6))
    losses = [m.train_loss for m in result.history]
    assert len(result.history) == 6 and result.epochs_completed == 6
    assert losses[-1] < losses[0] / 2
    assert result.history[-1].val_loss < result.history[0].val_loss
    assert result.best_metrics is not None and result.best_metrics.map >= 0.9
    assert all(
        0.0 <= m.map <= 1.0 and 0.0 <= m.micro_f1 <= 1.0 and 0.0 <= m.macro_f1 <= 1.0 for m in result.history
    )
    assert set(result.thresholds) == set(result.labels) == {"blue", "green", "red"}
    assert not result.stopped and not result.early_stopped
    assert result.device == "cpu" and result.precision == "fp32"


def test_text_model_learns_the_easy_dataset(large_text_dataset: Path, tiny_bert: str) -> None:
    result = train(text_config(large_text_dataset, tiny_bert, epochs=5, loss=LossSpec(name="bce")))
    losses = [m.train_loss for m in result.history]
    assert losses[-1] < losses[0] / 2
    assert result.best_metrics is not None and result.best_metrics.map >= 0.9


def test_callbacks_see_every_step_and_evaluation_in_order(
    text_dataset: Path, tiny_bert: str, tmp_path: Path
) -> None:
    recorder = Recorder()
    checkpoint = tmp_path / "run.ckpt"
    result = train(text_config(text_dataset, tiny_bert, checkpoint_path=checkpoint), [recorder])
    (info,) = recorder.of("begin")
    assert info.labels == ["animal", "color", "food"] and info.start_epoch == 0
    assert info.num_train + info.num_val == 48 and info.epochs == 2
    steps = recorder.of("step")
    assert [p.step for p in steps] == list(range(1, info.total_steps + 1))
    assert info.total_steps == 2 * info.steps_per_epoch
    assert all(p.steps == info.total_steps and p.epochs == 2 for p in steps)
    assert [p.epoch for p in steps] == [1] * info.steps_per_epoch + [2] * info.steps_per_epoch
    assert steps[0].as_dict() == {"epoch": 1, "epochs": 2, "step": 1, "steps": info.total_steps}
    kinds = [name for name, _ in recorder.events]
    assert kinds[0] == "begin" and kinds[-1] == "end"
    assert [k for k in kinds if k not in ("step",)] == [
        "begin",
        "evaluate",
        "checkpoint",
        "evaluate",
        "checkpoint",
        "end",
    ]
    evaluations = recorder.of("evaluate")
    assert [m.epoch for m in evaluations] == [1, 2]
    assert [m.step for m in evaluations] == [info.steps_per_epoch, info.total_steps]
    assert evaluations[1].time_s >= evaluations[0].time_s > 0
    assert recorder.of("end") == [result]
    assert result.history == evaluations


def test_cancel_stops_at_the_next_step(text_dataset: Path, tiny_bert: str) -> None:
    recorder = Recorder(stop_after_step=3)
    result = train(text_config(text_dataset, tiny_bert, epochs=3), [recorder])
    assert result.stopped and not result.early_stopped
    assert [p.step for p in recorder.of("step")] == [1, 2, 3]
    assert result.history == [] and result.best_metrics is None and result.epochs_completed == 0
    assert set(result.thresholds.values()) == {0.5}


def test_stop_flag_before_start_runs_no_step(image_dataset: Path) -> None:
    flag = StopFlag()
    flag.stop()
    recorder = Recorder()
    result = train(image_config(image_dataset), [flag, recorder])
    assert result.stopped and recorder.of("step") == []


def test_same_seed_gives_identical_metrics_and_another_seed_does_not(
    text_dataset: Path, tiny_bert: str
) -> None:
    first = train(text_config(text_dataset, tiny_bert))
    second = train(text_config(text_dataset, tiny_bert))
    assert comparable(first.history) == comparable(second.history)
    for a, b in zip(
        first.model.module.state_dict().values(), second.model.module.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    other = train(text_config(text_dataset, tiny_bert, seed=1))
    assert comparable(other.history) != comparable(first.history)


def test_image_runs_are_deterministic_with_augmentation(image_dataset: Path) -> None:
    first = train(image_config(image_dataset))
    second = train(image_config(image_dataset))
    assert comparable(first.history) == comparable(second.history)


@pytest.mark.parametrize("modality", ["text", "image"])
def test_resume_from_a_checkpoint_continues_the_same_curve(
    modality: str, text_dataset: Path, image_dataset: Path, tiny_bert: str, tmp_path: Path
) -> None:
    def config(**extra: Any) -> TrainConfig:
        if modality == "text":
            return text_config(text_dataset, tiny_bert, epochs=3, **extra)
        return image_config(image_dataset, epochs=3, **extra)

    straight = train(config())
    checkpoint = tmp_path / "ckpt" / "last.ckpt"
    interrupted = train(config(checkpoint_path=checkpoint), [Recorder(stop_after_epoch=1)])
    assert interrupted.stopped and interrupted.epochs_completed == 1
    recorder = Recorder()
    resumed = train(config(checkpoint_path=checkpoint, resume_from=checkpoint), [recorder])
    assert recorder.of("begin")[0].start_epoch == 1
    assert [m.epoch for m in recorder.of("evaluate")] == [2, 3]
    assert recorder.of("step")[0].step == recorder.of("begin")[0].steps_per_epoch + 1
    assert_histories_close(resumed.history, straight.history)
    for a, b in zip(
        resumed.model.module.state_dict().values(), straight.model.module.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert resumed.thresholds == pytest.approx(straight.thresholds)
    assert resumed.temperatures == pytest.approx(straight.temperatures, rel=1e-5)


def test_checkpoint_is_safetensors_with_json_state_and_written_atomically(
    image_dataset: Path, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "ckpt" / "last.ckpt"
    train(image_config(image_dataset, epochs=1, checkpoint_path=checkpoint))
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["last.ckpt"]
    with safe_open(str(checkpoint), framework="pt") as handle:
        metadata = handle.metadata()
        keys = set(handle.keys())
    assert metadata["format"] == "aplserve-checkpoint"
    assert any(k.startswith("model.") for k in keys) and any(k.startswith("optim.") for k in keys)
    assert {"rng.torch", "rng.numpy"} <= keys
    with checkpoint.open("rb") as raw:
        assert b"\x80\x04\x95" not in raw.read(1 << 16)  # no pickle stream in the header


def test_resume_refuses_a_checkpoint_of_another_configuration(image_dataset: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "last.ckpt"
    train(image_config(image_dataset, epochs=1, checkpoint_path=checkpoint))
    with pytest.raises(CheckpointError, match="different job"):
        train(image_config(image_dataset, epochs=1, learning_rate=1e-3, resume_from=checkpoint))
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        train(image_config(image_dataset, epochs=1, resume_from=tmp_path / "junk.ckpt"))


def test_resume_of_a_finished_run_returns_its_result(image_dataset: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "last.ckpt"
    done = train(image_config(image_dataset, checkpoint_path=checkpoint))
    recorder = Recorder()
    again = train(image_config(image_dataset, resume_from=checkpoint), [recorder])
    assert recorder.of("step") == [] and recorder.of("evaluate") == []
    assert comparable(again.history) == comparable(done.history)
    assert again.best_epoch == done.best_epoch
    for a, b in zip(
        again.model.module.state_dict().values(), done.model.module.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    # Finalizing scores the validation split again with the best weights: the same numbers.
    assert again.temperatures == pytest.approx(done.temperatures, rel=1e-6)
    assert again.thresholds == pytest.approx(done.thresholds, rel=1e-6)
    assert again.evaluation is not None and done.evaluation is not None
    assert again.evaluation["map"] == pytest.approx(done.evaluation["map"])


@pytest.mark.parametrize(
    "decision",
    [
        DecisionSpec(),
        DecisionSpec(policy="precision_at", target=0.9, min_labels=1),
        DecisionSpec(policy="recall_at", target=0.9),
        DecisionSpec(policy="fixed", target=0.4),
    ],
    ids=lambda d: d.policy,
)
def test_every_policy_finishes_with_calibrated_thresholds_and_an_evaluation(
    image_dataset: Path, decision: DecisionSpec
) -> None:
    result = train(image_config(image_dataset, epochs=2, decision=decision))
    evaluation = result.evaluation
    assert evaluation is not None and evaluation["decision"]["policy"] == decision.policy
    assert evaluation["decision"]["min_labels"] == decision.min_labels
    assert result.best_metrics is not None and evaluation["map"] == pytest.approx(result.best_metrics.map)
    per_label = {entry["label"]: entry for entry in evaluation["per_label"]}
    assert set(per_label) == set(result.labels) == set(result.temperatures)
    for label, entry in per_label.items():
        assert entry["threshold"] == result.thresholds[label]
        assert entry["threshold_source"] == result.threshold_sources[label]
        assert entry["temperature"] == result.temperatures[label]
        if entry["threshold_source"] == "tuned" and decision.policy in ("precision_at", "recall_at"):
            measured = entry["precision"] if decision.policy == "precision_at" else entry["recall"]
            assert entry["target_reached"] == (measured >= 0.9)
    if decision.policy == "fixed":
        assert set(result.thresholds.values()) == {0.4} and result.fallback_labels == []
    assert evaluation["calibration"]["method"] == "auto"  # the default
    assert result.calibrator is not None
    for label, calibrator in zip(result.labels, result.calibrator.labels, strict=True):
        assert per_label[label]["calibration"] == calibrator.method
        assert evaluation["calibration"]["per_label"][label]["method"] == calibrator.method
        assert (per_label[label]["threshold_reason"] is None) == (
            per_label[label]["threshold_source"] == "tuned"
        )


def test_calibration_none_keeps_raw_scores_and_a_stopped_run_is_not_finalized(image_dataset: Path) -> None:
    raw = train(image_config(image_dataset, epochs=1, calibration="none"))
    assert set(raw.temperatures.values()) == {1.0}
    assert raw.evaluation is not None and raw.evaluation["calibration"]["method"] == "none"
    assert raw.best_metrics is not None  # max-F1 thresholds on the raw scores, as every epoch tunes them
    assert raw.thresholds == pytest.approx(raw.best_metrics.thresholds, rel=1e-6)
    stopped = train(image_config(image_dataset, epochs=2), [Recorder(stop_after_epoch=1)])
    assert stopped.stopped and stopped.evaluation is None and stopped.temperatures == {}


def test_early_stopping_on_validation_map_keeps_the_best_epoch(image_dataset: Path) -> None:
    result = train(image_config(image_dataset, epochs=12, early_stopping_patience=1))
    maps = [m.map for m in result.history]
    assert result.early_stopped and not result.stopped
    assert result.epochs_completed == len(maps) < 12
    assert maps[-1] <= max(maps[:-1])  # the last epoch did not improve mAP
    assert all(maps[i] > max(maps[:i]) for i in range(1, len(maps) - 1))  # every earlier one did
    assert result.best_metrics is not None and result.best_metrics.map == max(maps)


def test_modality_mismatch_is_a_dataset_error(image_dataset: Path, tiny_bert: str) -> None:
    with pytest.raises(DatasetError, match="expects text data"):
        train(text_config(image_dataset, tiny_bert))


def test_device_resolution() -> None:
    assert resolve_device("cpu", "bf16") == (torch.device("cpu"), "fp32")
    if torch.cuda.is_available():
        device, precision = resolve_device("auto", "auto")
        assert device.type == "cuda" and precision in ("bf16", "fp16")
        assert resolve_device("cuda", "no")[1] == "fp32"
    else:
        assert resolve_device("auto", "auto") == (torch.device("cpu"), "fp32")
        with pytest.raises(DeviceUnavailableError):
            resolve_device("cuda", "auto")


def test_losses_are_per_sample_means_of_the_summed_loss(image_dataset: Path) -> None:
    result = train(image_config(image_dataset, epochs=1, loss=LossSpec(name="bce")))
    (metrics,) = result.history
    data = load_stored_dataset(image_dataset)
    _, val = split_indices(data.targets, 0.2, 0)
    transform = build_transform(result.model.preprocessing, train=False)
    pixels = torch.stack([transform(open_image(data.inputs[i])) for i in val])
    targets = torch.from_numpy(data.targets[val])
    with torch.inference_mode():
        logits = result.model.module.eval()(pixels)
    expected = float(F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")) / len(val)
    assert metrics.val_loss == pytest.approx(expected, rel=1e-4)
    assert 0.0 < metrics.train_loss < 10.0

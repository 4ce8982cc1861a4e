"""Data-parallel training: 2 gloo processes train like 1, and checkpoints cross between them.

The ranks are real processes started by torch's elastic launcher (tests.apl.ranks). The
model is a tiny BERT without dropout: dropout masks are drawn per rank, so with dropout
the two runs differ by their random masks, not by anything the data-parallel path does.
What is compared: the same split, the same global batches in the same order, DDP's
gradient average and the gathered validation give the same history and weights as one
process, up to float summation order. Measured: 3e-6 on the weights and 1e-7 on the
losses after 2 epochs (8 steps); the tolerance below leaves room for other BLAS builds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

import apl.models.text
from apl.errors import DeviceUnavailableError
from apl.spec import Hyperparameters, JobSpec, LossSpec
from apl.training import TrainConfig, train
from apl.training.distributed import DistributedSetup, OrderShard, local_batch_size
from tests.apl.ranks import StopAfterEpoch, launch, summary
from tests.apl.synthetic import write_text_dataset, write_tiny_bert

#: The first test starts two groups of 2 processes besides 3 one-process runs.
pytestmark = pytest.mark.timeout(600)

#: Losses, metrics and weights: 2 processes vs 1 (float summation order only).
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def bert_without_dropout(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"hf:{write_tiny_bert(tmp_path_factory.mktemp('tiny-bert-0'), dropout=0.0)}"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_text_dataset(tmp_path_factory.mktemp("dp-text"), n=48)


@pytest.fixture()
def no_head_dropout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apl.models.text, "HEAD_DROPOUT", 0.0)


def _config(dataset: Path, model: str, checkpoint: Path, **extra: Any) -> TrainConfig:
    # 48 samples, a third held out: 32 training samples, 4 global batches of 8 per epoch.
    hp = Hyperparameters(
        epochs=2, batch_size=8, learning_rate=1e-2, max_length=32, seed=0, val_fraction=1 / 3, devices=2
    )
    return TrainConfig(
        dataset_dir=dataset,
        base_model=model,
        hyperparameters=hp,
        loss=LossSpec(name="bce"),
        device="cpu",
        checkpoint_path=checkpoint,
        **extra,
    )


def _assert_close(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert len(a["history"]) == len(b["history"])
    for left, right in zip(a["history"], b["history"], strict=True):
        for key, value in left.items():
            if isinstance(value, float | dict):
                assert value == pytest.approx(right[key], abs=TOLERANCE), key
            else:
                assert value == right[key], key
    for key, weight in a["weights"].items():
        assert torch.allclose(weight.float(), b["weights"][key].float(), rtol=0, atol=TOLERANCE), key


@pytest.mark.usefixtures("no_head_dropout")
def test_two_gloo_processes_train_like_one_and_resume_across(
    dataset: Path, bert_without_dropout: str, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    one = summary(train(_config(dataset, bert_without_dropout, tmp_path / "one.safetensors")))

    # 2 processes, stopped by rank 0's callback after epoch 1 (as a cancel stops them): both ranks
    # leave at the same step with the same numbers, and epoch 1 is the one-process epoch 1.
    two_ckpt = tmp_path / "two.safetensors"
    ranks = launch(_config(dataset, bert_without_dropout, two_ckpt), 2, head_dropout=0.0, stop_after=1)
    assert set(ranks) == {0, 1}
    assert ranks[0]["stopped"] and ranks[1]["stopped"]
    assert ranks[0]["epochs_completed"] == ranks[1]["epochs_completed"] == 1
    assert ranks[0]["history"] == ranks[1]["history"]
    _assert_close({**ranks[0], "weights": {}}, {**one, "history": one["history"][:1], "weights": {}})

    # The 2-process checkpoint continues in 1 process: the same run as the uninterrupted one.
    resumed = summary(
        train(_config(dataset, bert_without_dropout, tmp_path / "r1.safetensors", resume_from=two_ckpt))
    )
    _assert_close(resumed, one)

    # And a 1-process checkpoint continues in 2 processes.
    one_ckpt = tmp_path / "one-stopped.safetensors"
    train(_config(dataset, bert_without_dropout, one_ckpt), [StopAfterEpoch(1)])
    ranks = launch(
        _config(dataset, bert_without_dropout, tmp_path / "r2.safetensors", resume_from=one_ckpt), 2, 0.0
    )
    assert not ranks[0]["stopped"] and ranks[0]["epochs_completed"] == 2
    _assert_close(ranks[0], one)
    _assert_close(ranks[1], one)


def test_the_shards_of_the_ranks_are_the_one_process_order() -> None:
    order = list(range(10))
    shards = [list(OrderShard(order, rank, 4)) for rank in range(4)]  # type: ignore[arg-type]
    assert [len(s) for s in shards] == [3, 3, 3, 3]
    # Padded with the first indices, like DistributedSampler; interleaved, the one-process order.
    interleaved = [shards[i % 4][i // 4] for i in range(12)]
    assert interleaved == [*order, 0, 1]


def test_the_global_batch_is_split_evenly() -> None:
    assert local_batch_size(32, 4) == 8
    with pytest.raises(DeviceUnavailableError, match="cannot be split evenly"):
        local_batch_size(30, 4)
    with pytest.raises(ValueError, match="multiple of devices"):
        JobSpec(dataset_id="d", base_model="timm:resnet10t", hyperparameters={"batch_size": 30, "devices": 4})
    assert JobSpec(dataset_id="d", base_model="timm:resnet10t", hyperparameters={"devices": "auto"})


def test_one_device_is_the_plain_path(dataset: Path, bert_without_dropout: str, tmp_path: Path) -> None:
    """A group of one takes no process group at all, and `devices` is not in the checkpoint's fingerprint."""
    config = _config(dataset, bert_without_dropout, tmp_path / "c.safetensors")
    config = dataclasses.replace(
        config,
        hyperparameters=config.hyperparameters.model_copy(update={"epochs": 1, "devices": 1}),
        distributed=DistributedSetup(rank=0, world_size=1),
    )
    result = train(config)
    assert not torch.distributed.is_initialized()
    assert result.epochs_completed == 1
    again = dataclasses.replace(
        config,
        hyperparameters=config.hyperparameters.model_copy(update={"devices": "auto"}),
        resume_from=tmp_path / "c.safetensors",
        distributed=None,
    )
    assert train(again).epochs_completed == 1

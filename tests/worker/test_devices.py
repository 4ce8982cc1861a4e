"""How many processes a job gets on a worker: its `devices`, or for `auto` the most that split its batch."""

from __future__ import annotations

import pytest

from apl.spec import Hyperparameters
from core.settings import Settings
from worker.devices import Devices, TooManyDevices, group_size, local_devices


def test_a_job_gets_the_devices_it_asks_for() -> None:
    four = Devices("cuda", 4)
    assert group_size(Hyperparameters(batch_size=32), four) == 1  # the default: one process, as ever
    assert group_size(Hyperparameters(batch_size=32, devices=2), four) == 2
    with pytest.raises(TooManyDevices, match="asks for 8 devices; this worker has 4 cuda"):
        group_size(Hyperparameters(batch_size=32, devices=8), four)


def test_auto_takes_the_most_devices_that_split_the_batch() -> None:
    assert group_size(Hyperparameters(batch_size=32, devices="auto"), Devices("cuda", 4)) == 4
    assert group_size(Hyperparameters(batch_size=30, devices="auto"), Devices("cuda", 4)) == 3
    assert group_size(Hyperparameters(batch_size=7, devices="auto"), Devices("cuda", 4)) == 1


def test_a_worker_offers_its_gpus_or_what_it_is_told_on_cpu() -> None:
    import torch

    if torch.cuda.is_available():  # a GPU host offers its GPUs, at most the setting
        assert local_devices(Settings()) == Devices("cuda", torch.cuda.device_count())
        assert local_devices(Settings(worker_devices=1)) == Devices("cuda", 1)
    else:
        assert local_devices(Settings()) == Devices("cpu", 1)
        assert local_devices(Settings(worker_devices=3)) == Devices("cpu", 3)

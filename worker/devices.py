"""The devices this worker offers a job, and how many of them a job gets.

A worker advertises one device class: its kind (`cuda` when torch sees a GPU, else
`cpu`) and count (`APLSERVE_WORKER_DEVICES`, by default the visible GPUs or 1). A job
with `hyperparameters.devices` N > 1 trains as N processes (worker.group), one per device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from apl.spec import Hyperparameters
from core.settings import Settings

DeviceKind = Literal["cuda", "cpu"]


@dataclass(frozen=True)
class Devices:
    kind: DeviceKind
    count: int

    def describe(self) -> str:
        return f"{self.count} {self.kind}"


def local_devices(settings: Settings) -> Devices:
    """What this machine lends a job: the setting, capped at the visible GPUs on a GPU host."""
    import torch

    if torch.cuda.is_available():
        visible = torch.cuda.device_count()
        return Devices("cuda", min(settings.worker_devices or visible, visible))
    return Devices("cpu", settings.worker_devices or 1)


class TooManyDevices(Exception):
    """The job asks for more devices than this worker has (routing should have kept it away)."""


def group_size(hyperparameters: Hyperparameters, devices: Devices) -> int:
    """How many processes train the job: its `devices`, or for `auto` the most that split its batch."""
    asked = hyperparameters.devices
    if asked == "auto":
        return max(n for n in range(1, devices.count + 1) if hyperparameters.batch_size % n == 0)
    if asked > devices.count:
        raise TooManyDevices(f"the job asks for {asked} devices; this worker has {devices.describe()}")
    return asked

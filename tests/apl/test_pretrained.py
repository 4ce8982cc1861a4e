"""Built-in base models really load their packaged weights, offline; other names fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import load_file
from sklearn.datasets import load_sample_image
from transformers import AutoModel, AutoTokenizer

from apl.errors import ModelUnavailableError
from apl.models import (
    ImageClassifier,
    TextClassifier,
    build_model,
    minilm_directory,
    pretrained_image_backbone,
)
from apl.models.weights import (
    EFFICIENTNET_LITE0_FILE,
    EFFICIENTNET_LITE0_PACKAGE,
    MOBILENET_V2_FILE,
    MOBILENET_V2_PACKAGE,
    load_state_dict_file,
    map_efficientnet_lite0,
    package_path,
)

IMAGENET_PALACE = 698
REFERENCE = Path(__file__).parent / "data" / "efficientnet_lite0_reference_logits.json"


def _probe() -> torch.Tensor:
    """A deterministic 224x224 input, the same one the reference logits were computed on."""
    c = torch.arange(3, dtype=torch.float64).view(3, 1, 1)
    h = torch.arange(224, dtype=torch.float64).view(1, 224, 1)
    w = torch.arange(224, dtype=torch.float64).view(1, 1, 224)
    return (torch.sin(0.05 * (c + 1) * h) * torch.cos(0.07 * w + c) * 1.5).float().unsqueeze(0)


def _photo(mean: list[float], std: list[float]) -> torch.Tensor:
    """scikit-learn's sample photo of a Chinese palace, resized and centre-cropped to 224."""
    transform = torchvision.transforms.Compose(
        [
            torchvision.transforms.Resize(256),
            torchvision.transforms.CenterCrop(224),
            torchvision.transforms.ToTensor(),
            torchvision.transforms.Normalize(mean, std),
        ]
    )
    return transform(Image.fromarray(load_sample_image("china.jpg"))).unsqueeze(0)


def test_minilm_embedding_equals_the_packaged_automodel() -> None:
    built = build_model("minilm-l6", 4)
    assert isinstance(built.module, TextClassifier)
    assert built.hidden_size == 384 and built.architecture == "bert"
    directory = minilm_directory()
    reference = AutoModel.from_pretrained(directory, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    batch = tokenizer(["A man is eating food.", "Short."], padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = reference(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        expected = (hidden * mask).sum(1) / mask.sum(1)
        built.module.eval()
        got = built.module.embed(**batch)
        logits = built.module(**batch)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert logits.shape == (2, 4)
    # The weights are the package's file, not a random initialisation.
    shipped = load_file(str(Path(directory) / "model.safetensors"))
    key = next(k for k in shipped if k.endswith("word_embeddings.weight"))
    torch.testing.assert_close(built.module.encoder.embeddings.word_embeddings.weight, shipped[key])


def test_mobilenet_v2_mapping_gives_torchvision_logits() -> None:
    state = load_state_dict_file(package_path(MOBILENET_V2_PACKAGE, MOBILENET_V2_FILE))
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(state)
    reference.eval()
    mapped = pretrained_image_backbone("mobilenetv2-100").eval()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    photo = _photo([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    with torch.inference_mode():
        torch.testing.assert_close(mapped(x), reference(x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(mapped(photo), reference(photo), rtol=1e-4, atol=1e-4)
        assert int(mapped(photo).argmax()) == IMAGENET_PALACE


def test_efficientnet_lite0_weights_all_loaded_and_match_the_reference_implementation() -> None:
    state = load_state_dict_file(package_path(EFFICIENTNET_LITE0_PACKAGE, EFFICIENTNET_LITE0_FILE))
    model = pretrained_image_backbone("efficientnet-lite0").eval()
    mapped = map_efficientnet_lite0(state, model)
    assert len(mapped) == len(state) == len(model.state_dict())
    loaded = model.state_dict()
    for key, tensor in mapped.items():
        assert torch.equal(loaded[key], tensor), key
    reference = json.loads(REFERENCE.read_text())["logits"]
    with torch.inference_mode():
        logits = model(_probe())[0]
        photo_logits = model(_photo([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]))[0]
    np.testing.assert_allclose(logits.numpy(), np.array(reference), atol=2e-4)
    assert int(photo_logits.argmax()) == IMAGENET_PALACE


def test_builtin_image_models_get_a_new_head_and_keep_the_backbone() -> None:
    built = build_model("efficientnet-lite0", 5, image_size=64)
    assert isinstance(built.module, ImageClassifier)
    assert built.architecture == "tf_efficientnet_lite0"
    assert built.preprocessing["image_size"] == 64
    assert built.preprocessing["mean"] == [0.5, 0.5, 0.5]
    state = load_state_dict_file(package_path(EFFICIENTNET_LITE0_PACKAGE, EFFICIENTNET_LITE0_FILE))
    torch.testing.assert_close(built.module.backbone.conv_stem.weight, state["_conv_stem.weight"])
    with torch.inference_mode():
        assert built.module.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 5)
    mobilenet = build_model("mobilenetv2-100", 2, image_size=32)
    assert mobilenet.preprocessing["interpolation"] == "bilinear"


def test_timm_names_build_random_models_or_fail_clearly() -> None:
    built = build_model("timm:resnet10t", 3, image_size=32)
    assert built.architecture == "resnet10t" and not built.info.pretrained
    with pytest.raises(ModelUnavailableError, match="no architecture named 'resnet_nonexistent'") as info:
        build_model("timm:resnet_nonexistent", 3)
    assert info.value.code == "model_unavailable"
    with pytest.raises(ModelUnavailableError, match="unknown base model"):
        build_model("nonsense", 3)


def test_hf_names_load_local_directories_and_never_reach_the_network(tiny_bert: str, tmp_path: Path) -> None:
    built = build_model(tiny_bert, 3, max_length=16)
    assert built.hidden_size == 32 and built.preprocessing == {"max_length": 16}
    # The tiny BERT has 64 positions: a longer max_length is clamped instead of crashing later.
    assert build_model(tiny_bert, 3, max_length=500).preprocessing == {"max_length": 64}
    with pytest.raises(ModelUnavailableError, match="cannot download"):
        build_model("hf:someone/not-cached-model", 3)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelUnavailableError):
        build_model(f"hf:{tmp_path}", 3)

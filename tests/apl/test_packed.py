"""Padding-free inference (apl.models.packed) gives the stock encoder's outputs, only where it applies."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel, DistilBertConfig, DistilBertModel

from apl.inference import Predictor
from apl.models import TextClassifier, build_model, minilm_directory
from apl.models.packed import packed_hidden_states, supports_packing

TEXTS = [
    "Toy Story (1995)",
    "A",
    "The Lord of the Rings: The Fellowship of the Ring (2001), extended edition",
    "Heat",
    "Short texts and long ones in one batch leave many pad tokens",
]


def _batch(**kwargs: object) -> dict[str, torch.Tensor]:
    tokenizer = AutoTokenizer.from_pretrained(minilm_directory(), local_files_only=True)
    encoded = tokenizer(TEXTS, padding=True, return_tensors="pt", **kwargs)
    return {key: value for key, value in encoded.items() if isinstance(value, torch.Tensor)}


def _assert_same_on_real_tokens(encoder: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
    with torch.inference_mode():
        stock = encoder(**batch).last_hidden_state
        packed = packed_hidden_states(
            encoder, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")
        )
    real = batch["attention_mask"].bool()
    assert (~real).any(), "the batch must hold pad tokens for this test to mean anything"
    torch.testing.assert_close(packed[real], stock[real], rtol=1e-5, atol=1e-5)
    assert torch.count_nonzero(packed[~real]) == 0


def test_the_shipped_minilm_gives_the_stock_hidden_states() -> None:
    built = build_model("minilm-l6", 3)
    encoder = built.module.encoder.eval()
    assert supports_packing(encoder)
    _assert_same_on_real_tokens(encoder, _batch())


def test_token_types_and_other_activations_are_respected() -> None:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=96, type_vocab_size=2, hidden_act="relu", max_position_embeddings=128,
    )  # fmt: skip
    encoder = BertModel(config).eval()
    batch = _batch()
    batch["token_type_ids"] = (torch.arange(batch["input_ids"].shape[1]) % 2).expand_as(batch["input_ids"])
    _assert_same_on_real_tokens(encoder, batch)


@pytest.mark.parametrize(
    "config",
    [
        BertConfig(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, is_decoder=True
        ),
        BertConfig(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            chunk_size_feed_forward=4,
        ),
    ],
    ids=["decoder", "chunked-feed-forward"],
)
def test_configurations_it_does_not_replicate_keep_the_stock_forward(config: BertConfig) -> None:
    assert not supports_packing(BertModel(config))


def test_other_architectures_keep_the_stock_forward() -> None:
    distil = DistilBertModel(DistilBertConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64))
    assert not supports_packing(distil)
    assert not supports_packing(torch.nn.Linear(2, 2))


def test_the_predictor_uses_it_and_predicts_what_the_padded_forward_does() -> None:
    built = build_model("minilm-l6", 3)
    labels = ["a", "b", "c"]
    predictor = Predictor.from_model(built, labels, dict.fromkeys(labels, 0.5), device="cpu")
    module = predictor.module
    assert isinstance(module, TextClassifier) and module.packed_inference
    packed = predictor.predict_proba(TEXTS)
    module.use_packed_inference(False)
    stock = predictor.predict_proba(TEXTS)
    assert packed.shape == (len(TEXTS), 3)
    assert abs(packed - stock).max() < 1e-5


def test_training_mode_never_takes_the_packed_path(monkeypatch: pytest.MonkeyPatch) -> None:
    built = build_model("minilm-l6", 3)
    module = built.module
    assert isinstance(module, TextClassifier) and module.use_packed_inference()

    def refuse(*args: object, **kwargs: object) -> torch.Tensor:
        raise AssertionError("the packed forward ran in training mode")

    monkeypatch.setattr("apl.models.text.packed_hidden_states", refuse)
    module.train()
    logits = module(**_batch())
    logits.sum().backward()  # the stock forward, with gradients
    assert module.head.weight.grad is not None

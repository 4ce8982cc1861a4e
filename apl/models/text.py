"""Transformers encoders with mean pooling and a linear multi-label head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from apl.errors import ModelUnavailableError
from apl.models.packed import packed_hidden_states, supports_packing

#: Dropout on the pooled embedding before the head (the usual fine-tuning value).
HEAD_DROPOUT = 0.1


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token states over real tokens only (sentence-transformers' pooling)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class TextClassifier(nn.Module):
    """encoder -> mean pooling -> dropout -> linear, one logit per label."""

    def __init__(self, encoder: nn.Module, hidden_size: int, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(HEAD_DROPOUT)
        self.head = nn.Linear(hidden_size, num_labels)
        #: Padding-free evaluation forward (apl.models.packed); set by `use_packed_inference`.
        self.packed_inference = False

    def use_packed_inference(self, enabled: bool = True) -> bool:
        """Run the encoder padding-free in eval mode when it has the BERT layout; returns whether it will."""
        self.packed_inference = enabled and supports_packing(self.encoder)
        return self.packed_inference

    def embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **extra: torch.Tensor
    ) -> torch.Tensor:
        """The mean-pooled sentence embedding (what sentence-transformers computes before normalising)."""
        if self.packed_inference and not self.training and set(extra) <= {"token_type_ids"}:
            types = extra.get("token_type_ids")
            hidden = packed_hidden_states(self.encoder, input_ids, attention_mask, types)
        else:
            outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra)
            hidden = outputs.last_hidden_state
        return mean_pool(hidden, attention_mask)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **extra: torch.Tensor
    ) -> torch.Tensor:
        pooled = self.embed(input_ids, attention_mask, **extra)
        logits: torch.Tensor = self.head(self.dropout(pooled))
        return logits


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def load_encoder(source: str, *, local_only: bool) -> tuple[nn.Module, Any]:
    """AutoModel + AutoTokenizer from a local directory or (when allowed) a hub id."""
    from transformers import AutoModel, AutoTokenizer

    _quiet_transformers()
    local_only = local_only or Path(source).is_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        encoder = AutoModel.from_pretrained(source, local_files_only=local_only, dtype=torch.float32)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        where = "this deployment cannot download from the hub" if local_only else "loading failed"
        raise ModelUnavailableError(f"the transformers model cannot be loaded ({where})") from exc
    return encoder, tokenizer


def encoder_from_config(config_dir: Path) -> nn.Module:
    """An encoder with the architecture saved in `config_dir` and untrained weights (to load into)."""
    from transformers import AutoConfig, AutoModel

    _quiet_transformers()
    config = AutoConfig.from_pretrained(config_dir, local_files_only=True)
    encoder: nn.Module = AutoModel.from_config(config)  # type: ignore[no-untyped-call]
    return encoder


def hidden_size_of(encoder: nn.Module, tokenizer: Any) -> int:
    """The embedding width, found by running the encoder once (works for any encoder config)."""
    encoded = tokenizer(["hidden size probe"], return_tensors="pt")
    inputs = {k: v for k, v in encoded.items() if isinstance(v, torch.Tensor)}
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.inference_mode():
            outputs = encoder(**inputs)
    except Exception as exc:  # e.g. an encoder-decoder model that needs decoder inputs
        raise ModelUnavailableError("the transformers model is not a plain encoder") from exc
    finally:
        encoder.train(was_training)
    hidden = getattr(outputs, "last_hidden_state", None)
    if not isinstance(hidden, torch.Tensor):
        raise ModelUnavailableError("the transformers model does not return token embeddings")
    return int(hidden.shape[-1])

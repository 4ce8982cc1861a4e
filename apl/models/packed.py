"""Padding-free inference for BERT-style encoders.

A batch of texts is padded to its longest text, and a padded encoder spends its
matrix products on the pad tokens too: with short, uneven texts (titles, queries,
tags) that is a third to a half of the work. Here the token states of the real
tokens only are kept in one (tokens, hidden) matrix; every linear layer, the
layer norms and the activation run on that matrix, and only attention, which
needs the (batch, length) layout, scatters it back into padded form for one
`scaled_dot_product_attention` call per layer (pad keys masked out, exactly as the
stock forward does). This is the "unpadding" that text-embedding servers do. It
returns the same `last_hidden_state` as the stock forward on the real tokens (a
test compares them) and zeros on the pad positions, which mean pooling ignores.

Only encoders with the BERT layout qualify (BertModel and the models built on it,
such as MiniLM); anything else, training mode, or a configuration this code does
not replicate (relative positions, decoders, chunked feed-forward) keeps the stock
forward. It is used for inference only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_LAYER_PARTS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "attention.output.LayerNorm",
    "intermediate.dense",
    "output.dense",
    "output.LayerNorm",
)


def _has(module: nn.Module, dotted: str) -> bool:
    try:
        module.get_submodule(dotted)
    except AttributeError:
        return False
    return True


def supports_packing(encoder: nn.Module) -> bool:
    """True when `encoder` has the BERT layout and a configuration `packed_hidden_states` replicates."""
    config: Any = getattr(encoder, "config", None)
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if config is None or not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return False
    if not _has(encoder, "embeddings") or getattr(config, "is_decoder", False):
        return False
    if getattr(config, "position_embedding_type", "absolute") not in (None, "absolute"):
        return False
    if getattr(config, "chunk_size_feed_forward", 0):
        return False
    for layer in layers:
        if not all(_has(layer, part) for part in _LAYER_PARTS):
            return False
        attention = layer.get_submodule("attention.self")
        if not all(hasattr(attention, name) for name in ("num_attention_heads", "attention_head_size")):
            return False
        if not callable(getattr(layer.get_submodule("intermediate"), "intermediate_act_fn", None)):
            return False
    return True


def packed_hidden_states(
    encoder: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The encoder's last hidden state, (batch, length, hidden), computed on real tokens only.

    Pad positions (attention_mask 0) hold zeros. Call only where `supports_packing`.
    """
    batch, length = input_ids.shape
    embeddings: torch.Tensor = encoder.get_submodule("embeddings")(
        input_ids=input_ids, token_type_ids=token_type_ids
    )
    hidden = embeddings.shape[-1]
    keep = attention_mask.reshape(-1).nonzero().squeeze(1)
    states = embeddings.reshape(batch * length, hidden).index_select(0, keep)
    # Pad keys get the dtype's minimum, as in the stock forward's attention mask.
    pad_keys = torch.zeros(batch, 1, 1, length, dtype=states.dtype, device=states.device)
    pad_keys.masked_fill_(attention_mask[:, None, None, :] == 0, torch.finfo(states.dtype).min)

    def padded(tokens: torch.Tensor) -> torch.Tensor:
        out = tokens.new_zeros(batch * length, tokens.shape[-1])
        out.index_copy_(0, keep, tokens)
        return out

    layers: Any = encoder.get_submodule("encoder").layer
    for layer in layers:
        attention = layer.attention.self
        heads, head_size = attention.num_attention_heads, attention.attention_head_size

        def split_heads(tokens: torch.Tensor, heads: int = heads, size: int = head_size) -> torch.Tensor:
            return padded(tokens).view(batch, length, heads, size).transpose(1, 2)

        context = F.scaled_dot_product_attention(
            split_heads(attention.query(states)),
            split_heads(attention.key(states)),
            split_heads(attention.value(states)),
            attn_mask=pad_keys,
            scale=getattr(attention, "scaling", head_size**-0.5),
        )
        context = context.transpose(1, 2).reshape(batch * length, heads * head_size).index_select(0, keep)
        out = layer.attention.output
        states = out.LayerNorm(out.dense(context) + states)
        intermediate = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(states))
        states = layer.output.LayerNorm(layer.output.dense(intermediate) + states)
    return padded(states).view(batch, length, hidden)

"""Bidirectional BERT family: mBERT (BERT layout, token types) and XLM-R (RoBERTa layout,
positions counted from padding_idx + 1), post-LayerNorm, with deep prompts and MLM head."""

from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import FairseqPLMError
from .modules import (ACTIVATIONS, KV, MLP, PLMOutput, PretrainedLM, SelfAttention, additive_mask, attention_mask,
                      cast_prefix, check_prefix, compose_padding_mask, compute_dtype)


class BertLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attn = SelfAttention(cfg.hidden_size, cfg.num_heads, cfg.attention_dropout)
        self.attn_ln = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size, cfg.activation)
        self.mlp_ln = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, prefix=None, attn_mask=None):
        a, _ = self.attn(x, prefix=prefix, attn_mask=attn_mask)
        x = self.attn_ln(x + self.dropout(a))
        x = self.mlp_ln(x + self.dropout(self.mlp(x)))
        return x


class MLMHead(nn.Module):
    """dense -> activation -> LayerNorm -> tied decoder + bias (BERT and RoBERTa alike)."""

    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.act = ACTIVATIONS[cfg.activation]
        self.ln = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, hidden, embedding_weight, shortlist=None):
        """Scores over the vocabulary [..., V], or over an ``OutputShortlist``'s pieces [..., K]
        (the same rows of the decoder and its bias)."""
        h = self.ln(self.act(self.dense(hidden)))
        if shortlist is not None:
            return shortlist.logits(h, embedding_weight, self.bias)
        return F.linear(h, embedding_weight, self.bias)


class BertEncoder(PretrainedLM):
    def __init__(self, cfg):
        super().__init__(cfg)
        if cfg.family not in ("bert", "roberta"):
            raise ValueError(f"BertEncoder needs a bert/roberta config, got {cfg.family!r}")
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_positions, cfg.hidden_size)
        self.token_type_embeddings = (
            nn.Embedding(cfg.type_vocab_size, cfg.hidden_size) if cfg.type_vocab_size > 0 else None
        )
        self.emb_ln = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList([BertLayer(cfg) for _ in range(cfg.num_layers)])
        self.lm_head = MLMHead(cfg)

    def embed(self, input_ids):
        return self.word_embeddings(input_ids)

    def logits(self, hidden, shortlist=None):
        """MLM scores over the vocabulary (or over a shortlist of it, see ``MLMHead``)."""
        return self.lm_head(hidden, self.word_embeddings.weight, shortlist)

    def default_position_ids(self, input_ids, padding_mask, t, device):
        cfg = self.cfg
        if cfg.family == "roberta":
            # RoBERTa/XLM-R: non-pad tokens count from padding_idx + 1, pads sit at padding_idx.
            if padding_mask is None:
                return torch.arange(t, device=device)[None] + cfg.position_offset
            keep = (~padding_mask).long()
            return torch.cumsum(keep, dim=1) * keep + (cfg.position_offset - 1)
        return torch.arange(t, device=device)[None]

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        *,
        inputs_embeds: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        prefix: Optional[List[KV]] = None,
        prefix_padding_mask: Optional[torch.Tensor] = None,
        padding_mask: Optional[torch.Tensor] = None,
        return_hidden_states: bool = False,
    ) -> PLMOutput:
        """Encode tokens bidirectionally. Arguments as in ``GPT.forward``; padding defaults to
        ``input_ids == pad_token_id`` and token types to 0."""
        cfg = self.cfg
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        b, t, _ = x.shape
        prefix_len = check_prefix(prefix, cfg.num_layers, cfg.num_heads, cfg.head_dim)
        if padding_mask is None and input_ids is not None and cfg.pad_token_id is not None:
            padding_mask = input_ids.eq(cfg.pad_token_id)
            if not padding_mask.any():
                padding_mask = None
        if position_ids is None:
            position_ids = self.default_position_ids(input_ids, padding_mask, t, x.device)
        if position_ids.numel() and int(position_ids.max()) >= cfg.max_positions:
            raise FairseqPLMError(
                f"sequence of {t} tokens needs position {int(position_ids.max())}, beyond the "
                f"PLM's {cfg.max_positions} positions (max {cfg.usable_positions} tokens)"
            )
        x = x + self.position_embeddings(position_ids)
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(position_ids)
            x = x + self.token_type_embeddings(token_type_ids)
        x = self.drop(self.emb_ln(x))
        kpm = compose_padding_mask(b, t, x.device, prefix_len, prefix_padding_mask,
                                   None, 0, padding_mask)
        # once per forward, shared by every layer: the mask and the prefix in the compute dtype
        dtype = compute_dtype(x)
        mask = additive_mask(attention_mask(t, prefix_len, 0, False, kpm, x.device), dtype)
        prefix = cast_prefix(prefix, dtype)
        hidden_states = [x] if return_hidden_states else None
        for i, layer in enumerate(self.layers):
            x = layer(x, prefix=None if prefix is None else prefix[i], attn_mask=mask)
            if return_hidden_states:
                hidden_states.append(x)
        return PLMOutput(hidden=x, hidden_states=hidden_states)

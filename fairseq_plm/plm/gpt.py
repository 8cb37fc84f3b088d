"""Causal GPT-2 family (GPT-2, mGPT), pre-LayerNorm, with deep prompts and a KV cache."""

from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import FairseqPLMError
from .modules import (KV, MLP, KVCache, PLMOutput, PretrainedLM, SelfAttention, additive_mask, attention_mask,
                      cast_prefix, check_prefix, compose_padding_mask, compute_dtype)


class GPTBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attn = SelfAttention(cfg.hidden_size, cfg.num_heads, cfg.attention_dropout)
        self.ln_2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size, cfg.activation)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, prefix=None, past=None, attn_mask=None, is_causal=False):
        a, present = self.attn(self.ln_1(x), prefix=prefix, past=past, attn_mask=attn_mask, is_causal=is_causal)
        x = x + self.dropout(a)
        x = x + self.dropout(self.mlp(self.ln_2(x)))
        return x, present

    def keys_values(self, x, past=None):
        """The keys/values this block adds to the cache, without computing its output."""
        return self.attn.keys_values(self.ln_1(x), past)


class GPT(PretrainedLM):
    def __init__(self, cfg):
        super().__init__(cfg)
        if cfg.family != "gpt2":
            raise ValueError(f"GPT needs a gpt2-family config, got {cfg.family!r}")
        self.wte = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.wpe = nn.Embedding(cfg.max_positions, cfg.hidden_size)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([GPTBlock(cfg) for _ in range(cfg.num_layers)])
        self.ln_f = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def embed(self, input_ids):
        return self.wte(input_ids)

    def output_embedding(self):
        return self.wte.weight if self.cfg.tie_word_embeddings else self.lm_head.weight

    def logits(self, hidden, shortlist=None):
        """Next-token scores from final hidden states (tied output embedding for mGPT); with an
        ``OutputShortlist`` only its pieces are scored ([..., K] instead of [..., V])."""
        if shortlist is not None:
            return shortlist.logits(hidden, self.output_embedding())
        return F.linear(hidden, self.output_embedding())

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        *,
        inputs_embeds: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        prefix: Optional[List[KV]] = None,
        prefix_padding_mask: Optional[torch.Tensor] = None,
        padding_mask: Optional[torch.Tensor] = None,
        cache: Optional[KVCache] = None,
        use_cache: bool = False,
        return_hidden_states: bool = False,
        cache_only: bool = False,
    ) -> PLMOutput:
        """Run the LM over new tokens.

        input_ids / inputs_embeds: [B, T] ids or [B, T, C] token embeddings (prompt tuning).
        position_ids: [B or 1, T]; defaults to cache.length + arange(T), so a stage that
            passes no cache restarts its positions at 0 (MSP, Fig. 1).
        prefix: per layer (keys, values) [B or 1, H, P, D]; visible to every token.
        prefix_padding_mask / padding_mask: [B, P] / [B, T], True = ignore that key.
        cache: keys/values of earlier calls (incremental decoding); with ``use_cache`` the
            returned cache holds them plus this call's.
        cache_only: only the returned cache is wanted (implies ``use_cache``): the top block
            computes its keys/values and stops; ``hidden`` is None.
        """
        cfg = self.cfg
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        b, t, _ = x.shape
        if cache is not None and not cache.layers:
            cache = None  # an empty cache: the first decoding step
        past_len = 0 if cache is None else cache.length
        prefix_len = check_prefix(prefix, cfg.num_layers, cfg.num_heads, cfg.head_dim)
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + t, device=x.device)[None]
        if position_ids.numel() and int(position_ids.max()) >= cfg.max_positions:
            raise FairseqPLMError(
                f"position {int(position_ids.max())} is beyond the PLM's {cfg.max_positions} "
                f"positions; shorten the input (or the prompt) to fit"
            )
        if padding_mask is None and input_ids is not None and cfg.pad_token_id is not None:
            padding_mask = input_ids.eq(cfg.pad_token_id)
            if not padding_mask.any():
                padding_mask = None
        past_mask = None if cache is None else cache.padding_mask
        kpm = compose_padding_mask(b, t, x.device, prefix_len, prefix_padding_mask,
                                   past_mask, past_len, padding_mask)
        x = self.drop(x + self.wpe(position_ids))
        # once per forward, shared by every layer: the mask and the prefix in the compute dtype
        dtype = compute_dtype(x)
        is_causal = prefix_len == 0 and past_len == 0 and kpm is None
        mask = None if is_causal else additive_mask(
            attention_mask(t, prefix_len, past_len, True, kpm, x.device), dtype)
        prefix = cast_prefix(prefix, dtype)
        hidden_states = [x] if return_hidden_states else None
        presents = []
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            layer_prefix = None if prefix is None else prefix[i]
            past = None if cache is None else cache.layers[i]
            if cache_only and i == last:
                presents.append(block.keys_values(x, past))
                break
            x, present = block(x, prefix=layer_prefix, past=past, attn_mask=mask, is_causal=is_causal)
            presents.append(present)
            if return_hidden_states:
                hidden_states.append(x)
        new_cache = None
        if use_cache or cache_only:
            if past_mask is None and padding_mask is None:
                mask = None
            else:
                mask = torch.cat([
                    past_mask if past_mask is not None else x.new_zeros(b, past_len, dtype=torch.bool),
                    padding_mask if padding_mask is not None else x.new_zeros(b, t, dtype=torch.bool),
                ], dim=1)
            new_cache = KVCache(layers=presents, padding_mask=mask)
        hidden = None if cache_only else self.ln_f(x)
        return PLMOutput(hidden=hidden, hidden_states=hidden_states, cache=new_cache)

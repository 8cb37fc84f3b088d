"""Building blocks shared by both PLM families: prompt-aware attention, MLP, KV cache.

Shapes: B batch, T new tokens, P prefix ("deep prompt") length, S cached (past) length,
H heads, D head dim, C = H * D model dim.
"""

import math
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

KV = Tuple[torch.Tensor, torch.Tensor]  # keys, values: [B, H, L, D] each
# a layer's prefix: one KV, or a list of KV segments concatenated in order


def gelu_new(x):
    """GPT-2's tanh approximation of GELU."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


ACTIVATIONS = {"gelu": F.gelu, "gelu_new": gelu_new, "relu": F.relu}


def attention_mask(t, prefix_len, past_len, causal, key_padding_mask, device):
    """Boolean mask [B or 1, 1, T, P+S+T] (True = may attend), or None when nothing is masked.

    Prefix keys are visible to every query; past and new keys follow the causal rule when
    ``causal``. ``key_padding_mask`` ([B, P+S+T], True = ignore) removes keys, e.g. padded
    source positions inside a stage's activations or padded tokens of the input.
    """
    n_keys = prefix_len + past_len + t
    if key_padding_mask is not None and key_padding_mask.size(-1) != n_keys:
        raise ValueError(
            f"key_padding_mask covers {key_padding_mask.size(-1)} keys, but attention sees "
            f"{n_keys} (prefix {prefix_len} + past {past_len} + input {t})"
        )
    if not causal and key_padding_mask is None:
        return None
    allowed = torch.ones(t, n_keys, dtype=torch.bool, device=device)
    if causal:
        seq = torch.ones(t, past_len + t, dtype=torch.bool, device=device).tril(diagonal=past_len)
        allowed[:, prefix_len:] = seq
    allowed = allowed[None, None]
    if key_padding_mask is not None:
        allowed = allowed & ~key_padding_mask[:, None, None, :]
        # a query that may see nothing (e.g. a left-pad token with no prompt) would give NaN;
        # let it see everything instead: its output is padding and ignored downstream.
        allowed = allowed | ~allowed.any(dim=-1, keepdim=True)
    return allowed


class SelfAttention(nn.Module):
    """Multi-head self-attention whose keys/values may be extended by a per-layer prefix
    (deep prompt or another stage's activations) and by a cache of past steps."""

    def __init__(self, hidden_size, num_heads, attention_dropout=0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.attention_dropout = attention_dropout

    def forward(self, x, *, causal, prefix: Optional[KV] = None, past: Optional[KV] = None,
                key_padding_mask=None):
        """Returns (output [B, T, C], present) where present = past + this call's (k, v),
        i.e. the activations a later call can use as ``past`` (or another stage as prefix)."""
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.num_heads, self.head_dim).transpose(1, 2) for z in (q, k, v))
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        present = (k, v)
        prefix_len = 0
        if prefix is not None:
            # one (keys, values) pair, or several segments (e.g. a prompt shared by the batch,
            # then per-example activations of another stage), concatenated in order
            segments = prefix if isinstance(prefix, list) else [prefix]
            ks = [pk.expand(b, -1, -1, -1) if pk.size(0) != b else pk for pk, _ in segments]
            vs = [pv.expand(b, -1, -1, -1) if pv.size(0) != b else pv for _, pv in segments]
            prefix_len = sum(pk.size(2) for pk in ks)
            k = torch.cat([pk.to(k.dtype) for pk in ks] + [k], dim=2)
            v = torch.cat([pv.to(v.dtype) for pv in vs] + [v], dim=2)
        past_len = 0 if past is None else past[0].size(2)
        dropout_p = self.attention_dropout if self.training else 0.0
        if causal and prefix_len == 0 and past_len == 0 and key_padding_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            mask = attention_mask(t, prefix_len, past_len, causal, key_padding_mask, x.device)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).reshape(b, t, c)
        return self.proj(y), present


class MLP(nn.Module):
    def __init__(self, hidden_size, intermediate_size, activation):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)
        self.act = ACTIVATIONS[activation]

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


@dataclass
class KVCache:
    """Per-layer keys/values of everything a causal PLM has consumed so far (no prefix).

    ``padding_mask`` ([B, S], True = pad) remembers which cached positions are padding.
    fairseq's beam search reorders it with ``reorder``.
    """

    layers: List[KV] = field(default_factory=list)
    padding_mask: Optional[torch.Tensor] = None

    @property
    def length(self):
        return 0 if not self.layers else self.layers[0][0].size(2)

    def reorder(self, new_order):
        return KVCache(
            layers=[(k.index_select(0, new_order), v.index_select(0, new_order)) for k, v in self.layers],
            padding_mask=None if self.padding_mask is None else self.padding_mask.index_select(0, new_order),
        )


@dataclass
class PLMOutput:
    hidden: torch.Tensor  # [B, T, C] final hidden states (after GPT-2's ln_f)
    hidden_states: Optional[List[torch.Tensor]] = None  # embeddings + every layer's output
    cache: Optional[KVCache] = None  # causal family: past + this call's keys/values


def compose_padding_mask(b, t, device, prefix_len=0, prefix_padding_mask=None,
                         past_padding_mask=None, past_len=0, padding_mask=None):
    """Concatenate [prefix | past | input] padding masks into one key padding mask,
    or None when none of them masks anything."""
    parts = [prefix_padding_mask, past_padding_mask, padding_mask]
    if all(p is None for p in parts):
        return None
    lens = [prefix_len, past_len, t]
    out = [p if p is not None else torch.zeros(b, n, dtype=torch.bool, device=device)
           for p, n in zip(parts, lens)]
    for p, n, name in zip(out, lens, ("prefix_padding_mask", "past padding mask", "padding_mask")):
        if p.shape != (b, n):
            raise ValueError(f"{name} has shape {tuple(p.shape)}, expected {(b, n)}")
    return torch.cat(out, dim=1)


def check_prefix(prefix, num_layers, num_heads, head_dim):
    """Validate a deep prompt: per layer one (keys, values) pair [B or 1, H, P, D], or a list
    of such segments. Returns the total prefix length."""
    if prefix is None:
        return 0
    if len(prefix) != num_layers:
        raise ValueError(f"deep prompt has {len(prefix)} layers, the PLM has {num_layers}")
    segments = prefix[0] if isinstance(prefix[0], list) else [prefix[0]]
    for k, v in segments:
        if k.dim() != 4 or k.size(1) != num_heads or k.size(3) != head_dim or k.shape != v.shape:
            raise ValueError(
                f"deep prompt keys/values must be [batch, {num_heads}, prefix_len, {head_dim}], "
                f"got {tuple(k.shape)} / {tuple(v.shape)}"
            )
    return sum(k.size(2) for k, _ in segments)


class PretrainedLM(nn.Module):
    """Common behaviour of our PLMs: freezing, eval-mode pinning, HF-style random init."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.keep_eval = False

    def freeze(self, keep_eval: bool = True):
        """Stop gradients into the PLM; with ``keep_eval`` its dropout stays off even while
        the surrounding fairseq model trains."""
        for p in self.parameters():
            p.requires_grad_(False)
        self.keep_eval = keep_eval
        if keep_eval:
            self.eval()
        return self

    def train(self, mode: bool = True):
        return super().train(mode and not self.keep_eval)

    @torch.no_grad()
    def init_random(self, seed: int = 1):
        """Deterministic random weights (N(0, 0.02), as GPT-2/BERT are initialised)."""
        gen = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.dim() == 1:  # layer norm gains
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
        return self

"""Building blocks shared by both PLM families: prompt-aware attention, MLP, KV cache.

Shapes: B batch, T new tokens, P prefix ("deep prompt") length, S cached (past) length,
H heads, D head dim, C = H * D model dim.
"""

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

KV = Tuple[torch.Tensor, torch.Tensor]  # keys, values: [B, H, L, D] each
# a layer's prefix: one KV, or a list of KV segments concatenated in order


def gelu_new(x):
    """GPT-2's tanh approximation of GELU, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))):
    torch computes exactly this formula in one fused kernel (``approximate="tanh"``) instead
    of seven elementwise passes (and their saved activations for backward)."""
    return F.gelu(x, approximate="tanh")


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


def compute_dtype(x):
    """The dtype attention runs in for activations like ``x``: autocast's where it is on
    (fp16/bf16 under ``--amp`` or CPU bf16 autocast), else x's own."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return x.dtype


def additive_mask(allowed, dtype):
    """A boolean attention mask (True = may attend) as an additive one (0 / -inf) in the
    attention's dtype, built once per forward. SDPA would otherwise convert a boolean mask
    to this form again in every layer."""
    if allowed is None:
        return None
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))


def cast_prefix(prefix, dtype):
    """A deep prompt / stage prefix (per layer one KV or a list of KV segments) in ``dtype``,
    converted once per forward instead of once per layer and decoding step. Returns the
    input itself when nothing needs converting."""
    if prefix is None:
        return None
    first = prefix[0] if isinstance(prefix[0], list) else [prefix[0]]
    if all(k.dtype == dtype and v.dtype == dtype for k, v in first):
        return prefix

    def cast(layer):
        if isinstance(layer, list):
            return [(k.to(dtype), v.to(dtype)) for k, v in layer]
        return layer[0].to(dtype), layer[1].to(dtype)

    return [cast(layer) for layer in prefix]


# Decoding steps (few queries) attend over prefix segments in place (segmented_attention) where
# that saves more than it costs: always on CPU (memory traffic dominates a step there), and on
# accelerators once the per-row copy of a batch-shared prompt that concatenation would make is
# large (many rows x a long prompt); below that, one SDPA kernel over concatenated keys beats the
# extra kernel launches of the segmented computation.
SEGMENTED_MAX_QUERIES = 8
SEGMENTED_MIN_SHARED_COPY = 1 << 22  # elements (rows x prompt length x model dim)


def use_segmented(q, segments):
    b, h, t, d = q.shape
    if t > SEGMENTED_MAX_QUERIES:
        return False
    if q.device.type == "cpu":
        return True
    shared = sum(k.size(2) for k, _ in segments if k.size(0) == 1)
    return b > 1 and b * shared * h * d >= SEGMENTED_MIN_SHARED_COPY


def segmented_attention(q, keys, values, mask=None):
    """softmax(q K^T / sqrt(D) + mask) V where K and V come as segments along the key axis
    (each [B or 1, H, L_i, D]), without concatenating them. A batch-1 segment (a prompt shared
    by the batch, MSP's P_d) is read once for all rows instead of being expanded and copied per
    row, layer and step. Meant for few queries (incremental decoding), where concatenating the
    keys costs more than the attention itself. ``mask``: additive [B or 1, 1, T, sum L_i]."""
    b, h, t, d = q.shape
    q = q * d ** -0.5
    folded = None  # q as [H, B*T, D]: all rows' queries against one shared segment in one bmm
    scores = []
    for k in keys:
        if k.size(0) == 1 and b > 1:
            if folded is None:
                folded = q.transpose(0, 1).reshape(h, b * t, d)
            scores.append(torch.matmul(folded, k[0].transpose(1, 2)).view(h, b, t, -1).transpose(0, 1))
        else:
            scores.append(torch.matmul(q, k.transpose(2, 3)))
    s = torch.cat(scores, dim=-1) if len(scores) > 1 else scores[0]
    if mask is not None:
        s = s + mask
    w = torch.softmax(s.float(), dim=-1).to(q.dtype)
    out, start = None, 0
    for v in values:
        n = v.size(2)
        wi = w[..., start:start + n]
        start += n
        if v.size(0) == 1 and b > 1:
            o = torch.matmul(wi.transpose(0, 1).reshape(h, b * t, n), v[0]).view(h, b, t, d).transpose(0, 1)
        else:
            o = torch.matmul(wi, v)
        out = o if out is None else out + o
    return out


class SelfAttention(nn.Module):
    """Multi-head self-attention whose keys/values may be extended by a per-layer prefix
    (deep prompt or another stage's activations) and by a cache of past steps.

    The mask is built once per forward by the model (``attention_mask`` -> ``additive_mask``)
    and shared by all layers; ``is_causal`` says that plain causal attention over the input
    alone needs no mask at all (SDPA's causal kernel)."""

    def __init__(self, hidden_size, num_heads, attention_dropout=0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.attention_dropout = attention_dropout

    def _heads(self, z, b, t):
        return z.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x, *, prefix: Optional[KV] = None, past: Optional[KV] = None, attn_mask=None,
                is_causal=False):
        """Returns (output [B, T, C], present) where present = past + this call's (k, v),
        i.e. the activations a later call can use as ``past`` (or another stage as prefix).
        ``attn_mask``: [B or 1, 1, T, P+S+T], additive (or boolean, True = may attend)."""
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = self._heads(q, b, t), self._heads(k, b, t), self._heads(v, b, t)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        present = (k, v)
        dropout_p = self.attention_dropout if self.training else 0.0
        if prefix is None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                               is_causal=is_causal and attn_mask is None)
        else:
            # one (keys, values) pair, or several segments (e.g. a prompt shared by the batch,
            # then per-example activations of another stage), in order before the input's keys
            segments = prefix if isinstance(prefix, list) else [prefix]
            if dropout_p == 0.0 and use_segmented(q, segments):
                if attn_mask is not None and attn_mask.dtype == torch.bool:
                    attn_mask = additive_mask(attn_mask, q.dtype)
                y = segmented_attention(q, [pk for pk, _ in segments] + [k], [pv for _, pv in segments] + [v],
                                        attn_mask)
            else:
                ks = [pk.expand(b, -1, -1, -1) if pk.size(0) != b else pk for pk, _ in segments]
                vs = [pv.expand(b, -1, -1, -1) if pv.size(0) != b else pv for _, pv in segments]
                k = torch.cat(ks + [k], dim=2)
                v = torch.cat(vs + [v], dim=2)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).reshape(b, t, c)
        return self.proj(y), present

    def keys_values(self, x, past: Optional[KV] = None) -> KV:
        """Only this layer's keys and values (past + this call's), without the attention: for
        a stage whose top-layer output nobody reads (MSP's source stages keep only their
        keys/values). Computes the k, v columns of the fused projection alone."""
        b, t, c = x.shape
        k, v = F.linear(x, self.qkv.weight[c:], self.qkv.bias[c:]).split(c, dim=2)
        k, v = self._heads(k, b, t), self._heads(v, b, t)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        return k, v


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

"""Deep continuous prompts: L vectors holding a key and a value for every PLM layer."""

import torch
import torch.nn as nn


def per_layer(p):
    """[layers, 2, H, L, D] -> per layer (keys, values), each [1, H, L, D], as views split off
    with ``unbind``: its backward stacks the layers' gradients once. (Indexing ``p[i, 0]`` per
    layer would make the backward zero-fill and accumulate a gradient of the whole tensor for
    every layer's key and value: 2 x 24 full-size fills and adds per stage at mGPT's shape,
    15% of an MSP training step.)"""
    return [tuple(t[None] for t in layer.unbind(0)) for layer in p.unbind(0)]


class DeepPrompt(nn.Module):
    """A deep prompt for a PLM with ``num_layers`` layers (MSP §3.1).

    Scaled reparameterization (MSP §3.4, Eq. 8-10): P = max(alpha, 1.0) * phi, with phi
    Glorot-uniform and alpha a learnable scalar initialised to 1.0. ``scaled=False`` gives
    the plain parameterization P = phi.
    """

    def __init__(self, num_layers, num_heads, head_dim, length, scaled=True):
        super().__init__()
        self.num_layers, self.num_heads, self.head_dim, self.length = num_layers, num_heads, head_dim, length
        # phi: [layers, 2 (key/value), length, hidden]
        self.phi = nn.Parameter(torch.empty(num_layers, 2, length, num_heads * head_dim))
        bound = (6.0 / (length + num_heads * head_dim)) ** 0.5
        nn.init.uniform_(self.phi, -bound, bound)  # Glorot uniform on each [length, hidden] slice
        self.alpha = nn.Parameter(torch.ones(())) if scaled else None

    def forward(self):
        """Per layer (keys, values), each [1, H, L, D] (broadcast over the batch)."""
        p = self.phi if self.alpha is None else torch.clamp(self.alpha, min=1.0) * self.phi  # Eq. 10
        p = p.view(self.num_layers, 2, self.length, self.num_heads, self.head_dim).transpose(2, 3)
        return per_layer(p)


class MLPDeepPrompt(nn.Module):
    """Prefix-tuning's deep prompt (Li & Liang 2021): P = MLP(E), E a [L, d] embedding and
    MLP: Linear(d, mid) -> tanh -> Linear(mid, 2·N·d). With mGPT (d=1024, N=24), L=128 and
    mid=512 this is 25.9M trainable parameters: the "26M" of MSP Table 1."""

    def __init__(self, num_layers, num_heads, head_dim, length, hidden, mid_dim=512):
        super().__init__()
        self.num_layers, self.num_heads, self.head_dim, self.length = num_layers, num_heads, head_dim, length
        self.embedding = nn.Parameter(torch.empty(length, hidden))
        nn.init.xavier_uniform_(self.embedding)
        self.mlp = nn.Sequential(nn.Linear(hidden, mid_dim), nn.Tanh(),
                                 nn.Linear(mid_dim, 2 * num_layers * num_heads * head_dim))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self):
        p = self.mlp(self.embedding)  # [L, 2·N·d]
        p = p.view(self.length, self.num_layers, 2, self.num_heads, self.head_dim).permute(1, 2, 3, 0, 4)
        return per_layer(p)


class EmbeddingPrompt(nn.Module):
    """Prompt tuning (Lester et al. 2021): L virtual token embeddings at the input layer only
    (128 x 1024 = 131K parameters for mGPT: MSP Table 1)."""

    def __init__(self, length, hidden):
        super().__init__()
        self.length = length
        self.embedding = nn.Parameter(torch.empty(length, hidden))
        nn.init.xavier_uniform_(self.embedding)

    def forward(self):
        return self.embedding[None]  # [1, L, d]


class PTuningPrompt(nn.Module):
    """P-tuning's prompt encoder (Liu et al. 2021, "GPT understands, too"), as MPT §III-A uses
    it: m input-layer pseudo-token vectors E [m, d] fed through a two-layer bidirectional LSTM
    (d/2 per direction) and an MLP d -> d -> d with ReLU: p = MLP(LSTM(E))."""

    def __init__(self, length, hidden):
        super().__init__()
        if hidden % 2:
            raise ValueError(f"PTuningPrompt needs an even hidden size, got {hidden}")
        self.length = length
        self.embedding = nn.Parameter(torch.randn(length, hidden))  # nn.Embedding's N(0, 1), as P-tuning
        self.lstm = nn.LSTM(hidden, hidden // 2, num_layers=2, bidirectional=True, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))

    def forward(self):
        return self.mlp(self.lstm(self.embedding[None])[0])  # [1, m, d]

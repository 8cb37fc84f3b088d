"""Deep continuous prompts: L vectors holding a key and a value for every PLM layer."""

import torch
import torch.nn as nn


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
        return [(p[i, 0][None], p[i, 1][None]) for i in range(self.num_layers)]

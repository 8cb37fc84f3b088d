"""Deep prompting of a frozen causal PLM for translation: ``gpt_deep_prompt``.

Source and target form one sequence behind one deep prompt P (MSP Table 5, "single-stage
prompting"): P is prepended to the keys/values of every layer, the source is read with
positions 0..|x|-1 and the target continues at |x|. Only P is trained (Eq. 7: cross-entropy
of y given [P; x]); P uses the scaled reparameterization of MSP Eq. 8-10.

Split for fairseq's encoder-decoder interfaces (so ``SequenceGenerator`` does beam search):
the encoder computes the source activations once per sentence; the decoder consumes target
tokens incrementally behind [P; source activations], which beam search reorders.
"""

from dataclasses import dataclass, field

import torch
from fairseq.models import (FairseqEncoder, FairseqEncoderDecoderModel, FairseqIncrementalDecoder,
                            register_model)

from ..plm.errors import FairseqPLMError
from ..plm.fairseq_checks import check_dictionary
from ..plm.frozen import FrozenPLMMixin, PLMArgs, build_frozen_plm
from ..plm.prompts import DeepPrompt


@dataclass
class GPTDeepPromptConfig(PLMArgs):
    prompt_length: int = field(default=128, metadata={"help": "prompt length L (paper: 128)"})
    no_scaled_reparam: bool = field(
        default=False, metadata={"help": "plain prompts instead of max(alpha, 1) * phi (Eq. 10)"})


class SourceEncoder(FairseqEncoder):
    """Runs the frozen PLM over [P; x] once and hands [P; activations of x] to the decoder."""

    def __init__(self, dictionary, plm, prompt):
        super().__init__(dictionary)
        self.plm, self.prompt = plm, prompt
        self.padding_idx = dictionary.pad()

    def forward(self, src_tokens, src_lengths=None, **unused):
        pad = src_tokens.eq(self.padding_idx)
        keep = (~pad).long()
        positions = (torch.cumsum(keep, dim=1) - 1).clamp(min=0)  # robust to either padding side
        prompt = self.prompt()
        out = self.plm(src_tokens, prefix=prompt, padding_mask=pad, position_ids=positions, use_cache=True)
        b = src_tokens.size(0)
        keys = [torch.cat([pk.expand(b, -1, -1, -1), k], dim=2) for (pk, _), (k, _) in zip(prompt, out.cache.layers)]
        values = [torch.cat([pv.expand(b, -1, -1, -1), v], dim=2) for (_, pv), (_, v) in zip(prompt, out.cache.layers)]
        prefix_pad = torch.cat([pad.new_zeros(b, self.prompt.length), pad], dim=1)
        return {"prefix_keys": keys, "prefix_values": values, "prefix_padding_mask": [prefix_pad],
                "src_lengths": [keep.sum(dim=1)]}

    def reorder_encoder_out(self, encoder_out, new_order):
        return {k: [t.index_select(0, new_order) for t in v] for k, v in encoder_out.items()}

    def max_positions(self):
        return self.plm.cfg.max_positions


class PromptedDecoder(FairseqIncrementalDecoder):
    """Continues the frozen PLM behind [P; source activations], one token at a time at
    inference (KV cache in fairseq's incremental state)."""

    def __init__(self, dictionary, plm):
        super().__init__(dictionary)
        self.plm = plm
        self.padding_idx = dictionary.pad()

    def forward(self, prev_output_tokens, encoder_out=None, incremental_state=None,
                features_only=False, **unused):
        cache = None
        if incremental_state is not None:
            cache = self.get_incremental_state(incremental_state, "cache")
            if cache is not None:
                prev_output_tokens = prev_output_tokens[:, cache.length:]
        past = 0 if cache is None else cache.length
        t = prev_output_tokens.size(1)
        positions = encoder_out["src_lengths"][0][:, None] + past + torch.arange(t, device=prev_output_tokens.device)
        prefix = list(zip(encoder_out["prefix_keys"], encoder_out["prefix_values"]))
        out = self.plm(prev_output_tokens, prefix=prefix,
                       prefix_padding_mask=encoder_out["prefix_padding_mask"][0],
                       padding_mask=prev_output_tokens.eq(self.padding_idx), position_ids=positions,
                       cache=cache, use_cache=incremental_state is not None)
        if incremental_state is not None:
            self.set_incremental_state(incremental_state, "cache", out.cache)
        x = out.hidden if features_only else self.plm.logits(out.hidden)
        return x, {"attn": [None], "inner_states": None}

    def reorder_incremental_state(self, incremental_state, new_order):
        cache = self.get_incremental_state(incremental_state, "cache")
        if cache is not None:
            self.set_incremental_state(incremental_state, "cache", cache.reorder(new_order))

    def max_positions(self):
        return self.plm.cfg.max_positions


@register_model("gpt_deep_prompt", dataclass=GPTDeepPromptConfig)
class GPTDeepPromptModel(FrozenPLMMixin, FairseqEncoderDecoderModel):
    @property
    def plm(self):
        return self.encoder.plm

    @classmethod
    def build_model(cls, cfg, task):
        plm = build_frozen_plm(cfg)
        if plm.cfg.family != "gpt2":
            raise FairseqPLMError(f"--plm {cfg.plm} is a {plm.cfg.family} model; gpt_deep_prompt needs a causal GPT")
        for d, lang in ((task.source_dictionary, task.cfg.source_lang), (task.target_dictionary, task.cfg.target_lang)):
            check_dictionary(d, plm, cfg.plm, what=f"dict.{lang}.txt", data=task.cfg.data)
        c = plm.cfg
        prompt = DeepPrompt(c.num_layers, c.num_heads, c.head_dim, cfg.prompt_length,
                            scaled=not cfg.no_scaled_reparam)
        encoder = SourceEncoder(task.source_dictionary, plm, prompt)
        decoder = PromptedDecoder(task.target_dictionary, plm)
        return cls(encoder, decoder)

    def max_positions(self):
        return (self.plm.cfg.max_positions, self.plm.cfg.max_positions)

"""Multi-stage prompting (MSP, Tan et al. 2022) of a frozen causal PLM, and its baselines.

Registered models (all on the shared GPT backbone, all trained with fairseq's
``label_smoothed_cross_entropy``, i.e. MSP Eq. 7 with optional label smoothing):

  ``msp``            encoding stage (Eq. 4) -> ``--reencoding-stages`` re-encoding stages (Eq. 5)
                     -> decoding stage (Eq. 6); one deep prompt per stage (§3.1) with scaled
                     reparameterization P = max(alpha, 1) * phi (Eq. 8-10).
                     Architectures for MSP Table 5: ``msp`` (default, 1 re-encoding, 19.0M at
                     mGPT size), ``msp_single_stage`` (6.3M), ``msp_two_stage`` (12.6M),
                     ``msp_2nd_reencoding`` (25.1M), ``msp_prompt_sharing`` (6.3M).
  ``prefix_tuning``  single-stage deep prompts reparameterized by an MLP (Li & Liang; 26M).
  ``prompt_tuning``  single-stage virtual tokens at the embedding layer only (Lester et al.; 131K).

How the stages map onto fairseq: the *encoder* runs the encoding and re-encoding stages once
per sentence and returns the decoder's prefix [P_d; H_r] (per layer keys and values);
``SequenceGenerator`` reorders it with the beam instead of recomputing it. The *decoder* is the
decoding stage, consuming target tokens incrementally with a KV cache. Position ids restart
at 0 in every stage (MSP Fig. 1); in single-stage prompting source and target form one
sequence, so target positions continue after the source.
"""

from dataclasses import dataclass, field
from typing import List

import torch
import torch.nn as nn
from fairseq.models import (FairseqEncoder, FairseqEncoderDecoderModel, FairseqIncrementalDecoder,
                            register_model, register_model_architecture)

from ..plm.errors import FairseqPLMError
from ..plm.frozen import FrozenPLMMixin, build_task_plm
from ..plm.prompts import DeepPrompt, EmbeddingPrompt, MLPDeepPrompt
from ..plm.shortlist import build_output_shortlist, normalized_probs
from ..plm.speed import FastPromptArgs, maybe_compile


# ------------------------------------------------------------------------------ configs

@dataclass
class MSPConfig(FastPromptArgs):
    reencoding_stages: int = field(
        default=1, metadata={"help": "number of re-encoding stages: 0 = two-stage (encoding/decoding), "
                                     "1 = MSP default, 2 = '+2nd re-encoding' (Table 5)"})
    share_prompts: bool = field(
        default=False, metadata={"help": "one prompt for all stages ('+ Prompt sharing', Table 5)"})
    single_stage: bool = field(
        default=False, metadata={"help": "single-stage prompting: source and target in one sequence "
                                         "behind one prompt (Table 5, first row)"})
    no_scaled_reparam: bool = field(
        default=False, metadata={"help": "plain prompts P = phi instead of max(alpha, 1) * phi (Eq. 8-10; §4.7)"})


@dataclass
class PrefixTuningConfig(FastPromptArgs):
    prefix_mlp_dim: int = field(default=512, metadata={"help": "hidden size of the reparameterization MLP"})


@dataclass
class PromptTuningConfig(FastPromptArgs):
    pass


# ------------------------------------------------------------------------------ encoder / decoder

def _prefix(prompt, activations):
    """Per layer [P; H] as two segments: the prompt [1, H, L, D] (shared by the batch, never
    copied per example or per beam) and the activations H [B, H, S, D]."""
    return [[p, h] for p, h in zip(prompt, activations)]


def _prefix_mask(prompt, pad):
    """Key padding mask over [P; H]: prompt positions are never padding."""
    return torch.cat([pad.new_zeros(pad.size(0), prompt[0][0].size(2)), pad], dim=1)


class StagedPromptEncoder(FairseqEncoder):
    """Source-side stages. ``stage_prompts`` holds one prompt module per stage, in order
    [encoding, re-encoding..., decoding] (the same module repeated when prompts are shared);
    ``input_prompt`` is prompt tuning's embedding-layer prompt."""

    def __init__(self, dictionary, plm, stage_prompts: List[nn.Module], single_stage=False, input_prompt=None):
        super().__init__(dictionary)
        self.plm = plm
        unique = list({id(p): p for p in stage_prompts}.values())  # shared prompts registered once
        self.prompts = nn.ModuleList(unique)
        self._stage_index = [[id(u) for u in unique].index(id(p)) for p in stage_prompts]
        self.single_stage = single_stage
        self.input_prompt = input_prompt
        self.padding_idx = dictionary.pad()

    def stage_prompt(self, i):
        return self.prompts[self._stage_index[i]]

    def forward(self, src_tokens, src_lengths=None, **unused):
        b = src_tokens.size(0)
        pad = src_tokens.eq(self.padding_idx)
        keep = (~pad).long()
        positions = (torch.cumsum(keep, dim=1) - 1).clamp(min=0)  # 0..|x|-1 whichever side is padded
        if self.input_prompt is not None:  # prompt tuning: [V; x] in one input sequence
            v = self.input_prompt()
            x = torch.cat([v.expand(b, -1, -1).to(self.plm.wte.weight.dtype), self.plm.embed(src_tokens)], dim=1)
            n = v.size(1)
            pos = torch.cat([torch.arange(n, device=src_tokens.device)[None].expand(b, -1), positions + n], dim=1)
            mask = torch.cat([pad.new_zeros(b, n), pad], dim=1)
            h = self.plm(inputs_embeds=x, padding_mask=mask, position_ids=pos, cache_only=True).cache.layers
            return self._output(None, h, mask, keep.sum(dim=1) + n)
        stages = len(self._stage_index)
        # Source stages keep only their keys/values (cache_only: the top layer's attention
        # output, MLP and final LayerNorm would be discarded, so they are not computed).
        # Encoding stage, Eq. (4): H_e = f_LM(X, P_e)
        prompt = self.stage_prompt(0)()
        h = self.plm(src_tokens, prefix=prompt, padding_mask=pad, position_ids=positions, cache_only=True).cache.layers
        # Re-encoding stages, Eq. (5): H_r = f_LM(X, [P_r; H_e]); positions restart at 0
        for i in range(1, stages - 1):
            prompt = self.stage_prompt(i)()
            h = self.plm(src_tokens, prefix=_prefix(prompt, h), prefix_padding_mask=_prefix_mask(prompt, pad),
                         padding_mask=pad, position_ids=positions, cache_only=True).cache.layers
        # Decoding stage's prefix, Eq. (6): [P_d; H_r] (single-stage: [P; H_e] with the same P)
        prompt = self.stage_prompt(stages - 1)()
        offset = keep.sum(dim=1) if self.single_stage else keep.new_zeros(b)
        return self._output(prompt, h, _prefix_mask(prompt, pad), offset)

    @staticmethod
    def _output(prompt, h, mask, offset):
        """The decoder's prefix: prompt segment (batch 1, not reordered by beam search) and
        per-example activations; the padding mask covers both. The prompt is converted to the
        activations' dtype here, once per batch (under --amp: fp16), not at every decoding step.
        ``sentence_ids`` lets beam search skip copying rows that did not change."""
        dtype = h[0][0].dtype
        return {"prompt_keys": [] if prompt is None else [k.to(dtype) for k, _ in prompt],
                "prompt_values": [] if prompt is None else [v.to(dtype) for _, v in prompt],
                "src_keys": [k for k, _ in h], "src_values": [v for _, v in h],
                "prefix_padding_mask": [mask], "target_offset": [offset],
                "sentence_ids": [torch.arange(mask.size(0), device=mask.device)]}

    def reorder_encoder_out(self, encoder_out, new_order):
        """Beam search reorders rows at every step, but the source side of all beams of one
        sentence is the same: unless the reorder moves rows across sentences (the first
        expansion to beams, or finished sentences leaving the batch), nothing is copied."""
        ids = encoder_out.get("sentence_ids")
        if ids:
            moved = ids[0].index_select(0, new_order)
            if moved.shape == ids[0].shape and torch.equal(moved, ids[0]):
                return dict(encoder_out)
        return {k: (v if k.startswith("prompt_") else [t.index_select(0, new_order) for t in v])
                for k, v in encoder_out.items()}

    def max_positions(self):
        n = 0 if self.input_prompt is None else self.input_prompt.length
        return self.plm.cfg.max_positions - n


class CachedPLMDecoder(FairseqIncrementalDecoder):
    """A frozen PLM continuing behind a prefix, with its KV cache in fairseq's incremental state
    (what beam search reorders): the plumbing of ``PrefixConditionedDecoder`` and of the
    multi-direction decoder of ``models/multi_prompt.py``."""

    def __init__(self, dictionary, plm):
        super().__init__(dictionary)
        self.plm = plm
        self.padding_idx = dictionary.pad()

    def new_steps(self, prev_output_tokens, incremental_state):
        """(the tokens not yet in the cache, the cache or None, their step numbers [T])."""
        cache = None
        if incremental_state is not None:
            cache = self.get_incremental_state(incremental_state, "cache")
            if cache is not None:
                prev_output_tokens = prev_output_tokens[:, cache.length:]
        past = 0 if cache is None else cache.length
        steps = past + torch.arange(prev_output_tokens.size(1), device=prev_output_tokens.device)
        return prev_output_tokens, cache, steps

    def continue_prefix(self, prev_output_tokens, encoder_out, incremental_state):
        """MSP Eq. (6): the frozen PLM continues behind the encoder's prefix per layer
        [prompt; activations] (prompt segment shared by the batch, its padding mask per row).
        Returns (the PLM's output for the new tokens, their step numbers [T])."""
        prev_output_tokens, cache, steps = self.new_steps(prev_output_tokens, incremental_state)
        positions = encoder_out["target_offset"][0][:, None] + steps
        src = list(zip(encoder_out["src_keys"], encoder_out["src_values"]))
        prompt = list(zip(encoder_out["prompt_keys"], encoder_out["prompt_values"]))
        prefix = _prefix(prompt, src) if prompt else src
        out = self.run_plm(prev_output_tokens, prefix, encoder_out["prefix_padding_mask"][0], positions, cache,
                           incremental_state)
        return out, steps

    def run_plm(self, tokens, prefix, prefix_padding_mask, positions, cache, incremental_state):
        """One PLM forward behind ``prefix``; the new cache goes to the incremental state."""
        out = self.plm(tokens, prefix=prefix, prefix_padding_mask=prefix_padding_mask,
                       padding_mask=tokens.eq(self.padding_idx), position_ids=positions,
                       cache=cache, use_cache=incremental_state is not None)
        if incremental_state is not None:
            self.set_incremental_state(incremental_state, "cache", out.cache)
        return out

    def reorder_incremental_state(self, incremental_state, new_order):
        cache = self.get_incremental_state(incremental_state, "cache")
        if cache is not None:
            self.set_incremental_state(incremental_state, "cache", cache.reorder(new_order))

    def max_positions(self):
        return self.plm.cfg.max_positions


class PrefixConditionedDecoder(CachedPLMDecoder):
    """Decoding stage: the frozen PLM continues behind the encoder's prefix, Eq. (6); output
    probabilities through the tied embedding, Eq. (3)/(7). KV cache in fairseq's incremental state."""

    def __init__(self, dictionary, plm, output_shortlist=None):
        super().__init__(dictionary, plm)
        self.output_shortlist = output_shortlist  # plm/shortlist.py; None: the full vocabulary

    def forward(self, prev_output_tokens, encoder_out=None, incremental_state=None, features_only=False, **unused):
        out, _ = self.continue_prefix(prev_output_tokens, encoder_out, incremental_state)
        extra = {"attn": [None], "inner_states": None}
        if features_only:
            return out.hidden, extra
        if self.output_shortlist is not None:
            # scores over the shortlist; beam search (incremental) gets full-vocabulary
            # log-probabilities from get_normalized_probs, training gets the shortlist's
            extra["output_shortlist"] = self.output_shortlist
            extra["full_vocab"] = incremental_state is not None
        return self.plm.logits(out.hidden, self.output_shortlist), extra

    def get_normalized_probs(self, net_output, log_probs, sample=None):
        """Over the shortlist for the training criterion (targets mapped by the model's
        get_targets); over the full vocabulary (-inf outside the shortlist) for beam search
        and for fairseq's reference scorer (which passes ``sample``)."""
        extra = net_output[1] if len(net_output) > 1 else None
        shortlist = extra.get("output_shortlist") if isinstance(extra, dict) else None
        if shortlist is None:
            return super().get_normalized_probs(net_output, log_probs, sample)
        return normalized_probs(net_output[0], shortlist, log_probs, extra.get("full_vocab") or sample is not None)


# ------------------------------------------------------------------------------ models

class PromptedGPTModel(FrozenPLMMixin, FairseqEncoderDecoderModel):
    """A frozen causal PLM steered to translation by trainable prompts only."""

    @property
    def plm(self):
        return self.encoder.plm

    @classmethod
    def build_model(cls, cfg, task):
        plm = maybe_compile(build_task_plm(cfg, task, ("gpt2",), f"{cls.__name__} needs a causal GPT"), cfg)
        encoder = cls.build_encoder(cfg, task.source_dictionary, plm)
        tgt = task.target_dictionary
        shortlist = build_output_shortlist(getattr(cfg, "output_shortlist", "none"), tgt, task.cfg.data,
                                           task.cfg.source_lang, task.cfg.target_lang)
        return cls(encoder, PrefixConditionedDecoder(tgt, plm, shortlist))

    def get_targets(self, sample, net_output):
        """Targets as shortlist positions when the decoder scored a shortlist (training)."""
        target = sample["target"]
        extra = net_output[1] if len(net_output) > 1 else None
        if isinstance(extra, dict) and extra.get("output_shortlist") is not None and not extra.get("full_vocab"):
            return extra["output_shortlist"].to_positions(target, self.decoder.dictionary.unk())
        return target

    def max_positions(self):
        return (self.encoder.max_positions(), self.decoder.max_positions())

    @property
    def sequence_limit(self):
        """|prompt| + |x| + |y| limit where they share one position range (else None)."""
        enc = self.encoder
        if not enc.single_stage:
            return None
        return self.plm.cfg.max_positions - (0 if enc.input_prompt is None else enc.input_prompt.length)


@register_model("msp", dataclass=MSPConfig)
class MSPModel(PromptedGPTModel):
    @classmethod
    def build_encoder(cls, cfg, dictionary, plm):
        c = plm.cfg
        if cfg.single_stage:
            stages = 1
        else:
            if not 0 <= cfg.reencoding_stages <= 8:
                raise FairseqPLMError(f"--reencoding-stages={cfg.reencoding_stages}: expected 0..8")
            stages = 2 + cfg.reencoding_stages  # encoding, re-encoding(s), decoding

        def new_prompt():
            return DeepPrompt(c.num_layers, c.num_heads, c.head_dim, cfg.prompt_length, scaled=not cfg.no_scaled_reparam)

        if cfg.single_stage or cfg.share_prompts:
            shared = new_prompt()
            prompts = [shared] * max(stages, 2)
        else:
            prompts = [new_prompt() for _ in range(stages)]
        return StagedPromptEncoder(dictionary, plm, prompts, single_stage=cfg.single_stage)


@register_model("prefix_tuning", dataclass=PrefixTuningConfig)
class PrefixTuningModel(PromptedGPTModel):
    @classmethod
    def build_encoder(cls, cfg, dictionary, plm):
        c = plm.cfg
        prompt = MLPDeepPrompt(c.num_layers, c.num_heads, c.head_dim, cfg.prompt_length, c.hidden_size,
                               cfg.prefix_mlp_dim)
        return StagedPromptEncoder(dictionary, plm, [prompt, prompt], single_stage=True)


@register_model("prompt_tuning", dataclass=PromptTuningConfig)
class PromptTuningModel(PromptedGPTModel):
    @classmethod
    def build_encoder(cls, cfg, dictionary, plm):
        return StagedPromptEncoder(dictionary, plm, [], single_stage=True,
                                   input_prompt=EmbeddingPrompt(cfg.prompt_length, plm.cfg.hidden_size))


# Table 5 configurations
@register_model_architecture("msp", "msp_single_stage")
def msp_single_stage(args):
    args.single_stage = getattr(args, "single_stage", True)


@register_model_architecture("msp", "msp_two_stage")
def msp_two_stage(args):
    args.reencoding_stages = getattr(args, "reencoding_stages", 0)


@register_model_architecture("msp", "msp_2nd_reencoding")
def msp_2nd_reencoding(args):
    args.reencoding_stages = getattr(args, "reencoding_stages", 2)


@register_model_architecture("msp", "msp_prompt_sharing")
def msp_prompt_sharing(args):
    args.share_prompts = getattr(args, "share_prompts", True)

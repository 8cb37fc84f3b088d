"""SGA: semantic-guided alignment-then-denoising (Wu et al. 2023), a frozen multilingual
encoder (XLM-R; mBERT works too) used as a non-autoregressive generator.

Three units share the frozen PLM and differ only in their deep prompts (Fig. 2):

  semantic encoding (§4.2)  h_s^{1:L} = f_LM(theta_ps, X)                         Eq. (1)
                            K_s^l = h_s^l W_K,  V_s^l = h_s^l W_V (shared over l)  Eq. (2)
  alignment (§4.3)          prefix_l = [K_s^l; K_a^l], [V_s^l; V_a^l]              Eq. (3)
                            T_0 = f_LM(theta_pa, Y_blank)                          Eq. (4)
  denoising (§4.4)          prefix_l = [K_s^l; K_d^l], [V_s^l; V_d^l]              Eq. (5)
                            T_{i+1} = f_LM(theta_pd, T~_i)                         Eq. (6)
  training (§4.5)           L = L_1(theta_ps, theta_pa) + L_2(theta_ps, theta_pd)  Eq. (7)

h_s^l is the output of layer l (l = 1..L) and feeds layer l of the other units. W_K and W_V
are d x d with bias, as in the authors' code: with prompts of length 128 that is the
authors' 8,259,075 trained parameters for XLM-R base (Table 1: "8M"; 6M without denoising).
Prompts use MSP's scaled reparameterization (Eq. 8-10 of MSP).

Alignment objectives (``--alignment``):
  ``ctc``           translation: Y_blank is r x |x| ``<mask>`` tokens (``--upsample-ratio``,
                    default 2) and L_1 is CTC. The CTC blank is ``<mask>`` (see nat/ctc.py).
                    ``--ctc-canvas predicted`` (``--arch sga_ctc_free``): r x the length
                    predictor's |y| instead, for free generation.
  ``mask_predict``  free generation: a length predictor on the mean of h_s^L, a masked-token
                    loss on the target with n ~ U{1..|y|} tokens masked, and Mask-Predict
                    decoding (``--mask-predict-iterations``, default 4 as in Table 3).

Denoising is a CTC unit over a canvas of fixed length: after the alignment the canvas holds
B(T_0) *in place* (merged repeats and blanks become ``<mask>``). For Mask-Predict the |y|
tokens are first duplicated (x2, §4.4). Training (``--denoiser-training``): by default the
paper's pairs (Y, T_i), T_0 the detached alignment output with random deletion/repetition
noise and T_1.. the denoiser's own outputs (``--denoise-train-steps``, 2); ``noised_t0``
trains on the noised T_0 alone. Inference loops until the output stops changing or
``--iter-decode-max-iter`` loops ran (fairseq's ``IterativeRefinementGenerator``: step 0 is
the alignment, steps 1.. are denoising loops). With Mask-Predict, ``mask_predict_iterations``
0 (Table 4's zero-iteration row) skips the Mask-Predict pass: the CTC denoiser aligns a blank
canvas of twice the predicted length.

Details the authors' code gets wrong and we do not: source padding is masked in every unit,
XLM-R position ids start at padding_idx + 1 (the backbone's default), the canvas is sized per
sentence (no fixed-size canvases), and decoding is batched (CTC collapse included).
"""

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.dataclass import ChoiceEnum
from fairseq.iterative_refinement_generator import DecoderOut
from fairseq.models import BaseFairseqModel, FairseqEncoder, register_model, register_model_architecture

from ..nat.ctc import NEVER, ctc_blank, ctc_collapse_in_place
from ..nat.refinement import (deletion_repetition_noise, lengths_to_mask, lowest_scores_mask, mask_predict_count,
                              random_target_mask, upsample_by_duplication)
from ..plm.config import preset
from ..plm.errors import FairseqPLMError
from ..plm.frozen import FrozenPLMMixin, build_task_plm
from ..plm.prompts import DeepPrompt
from ..plm.shortlist import build_output_shortlist
from ..plm.speed import FastPromptArgs, maybe_compile
from ..plm.vocab import frame, frame_source


@dataclass
class SGAConfig(FastPromptArgs):
    alignment: ChoiceEnum(["ctc", "mask_predict"]) = field(
        default="ctc", metadata={"help": "alignment objective (§4.3): ctc (translation) or mask_predict "
                                         "(free generation: question/story generation)"})
    upsample_ratio: int = field(
        default=2, metadata={"help": "CTC canvas length = ratio x source length (§4.3)"})
    ctc_canvas: ChoiceEnum(["source", "predicted"]) = field(
        default="source", metadata={"help": "CTC alignment canvas: source: upsample_ratio x |x| (translation); "
                                            "predicted: upsample_ratio x the length predictor's |y| (free "
                                            "generation, where |y| does not follow |x|; a separately trained "
                                            "CTC model for Table 4's zero-iteration row)"})
    no_denoising: bool = field(
        default=False, metadata={"help": "alignment only: 'SGA w/o. denoising' (Table 1)"})
    noise_prob: float = field(
        default=0.2, metadata={"help": "denoiser training noise: each sentence draws p ~ U(0, noise_prob) "
                                       "and deletes or repeats each token with probability p (§4.4)"})
    denoiser_training: ChoiceEnum(["own_outputs", "noised_t0"]) = field(
        default="own_outputs", metadata={"help": "own_outputs (§4.4, the paper): L_2 over the pairs (Y, T_i), "
                                                 "T_0 the alignment's output (noised), T_1.. the denoiser's own "
                                                 "outputs (--denoise-train-steps of them); noised_t0: L_2 on the "
                                                 "noised T_0 only"})
    denoise_train_steps: int = field(
        default=2, metadata={"help": "own_outputs: denoiser inputs per training sentence, T_0 .. T_{k-1}"})
    mask_predict_iterations: int = field(
        default=4, metadata={"help": "Mask-Predict alignment iterations at inference (Table 3: 4; Table 4: 0, 2, "
                                     "4, 8). 0: no Mask-Predict pass, the CTC denoiser aligns a blank canvas "
                                     "of twice the predicted length (Table 4's zero-iteration row)"})
    max_target_length: int = field(
        default=256, metadata={"help": "Mask-Predict length predictor classes 0..N-1"})
    length_loss_factor: float = field(
        default=0.1, metadata={"help": "weight of the Mask-Predict length loss"})
    no_scaled_reparam: bool = field(
        default=False, metadata={"help": "plain prompts P = phi instead of max(alpha, 1) * phi"})
    expect_plm_shape: Optional[str] = field(
        default=None, metadata={"help": "refuse a --plm whose layers/width differ from this preset "
                                        "(set by the sga_xlmr_base / sga_xlmr_large architectures)"})


def _heads(x, num_heads):
    """[B, T, C] -> [B, H, T, D]"""
    b, t, c = x.shape
    return x.view(b, t, num_heads, c // num_heads).transpose(1, 2)


class SemanticEncoder(FairseqEncoder):
    """§4.2: the source read by the PLM behind theta_ps, every layer's output projected by
    the shared W_K, W_V (Eq. 1-2). The source is framed ``<s> x </s>`` as in pre-training."""

    def __init__(self, dictionary, plm, prompt, upsample_ratio, length_classes=0):
        super().__init__(dictionary)
        self.plm = plm
        self.prompt = prompt
        d = plm.cfg.hidden_size
        self.w_k = nn.Linear(d, d)
        self.w_v = nn.Linear(d, d)
        self.length_head = nn.Linear(d, length_classes) if length_classes else None
        self.upsample_ratio = upsample_ratio
        self.bos, self.eos, self.pad = dictionary.bos(), dictionary.eos(), dictionary.pad()

    def forward(self, src_tokens, src_lengths=None, **unused):
        framed, n = frame_source(src_tokens, self.bos, self.eos, self.pad)
        pad = framed.eq(self.pad)
        out = self.plm(framed, prefix=self.prompt(), padding_mask=pad, return_hidden_states=True)
        h = out.hidden_states[1:]  # outputs of layers 1..L
        heads = self.plm.cfg.num_heads
        enc = {
            "src_keys": [_heads(self.w_k(x), heads) for x in h],        # K_s^{1:L}, Eq. (2)
            "src_values": [_heads(self.w_v(x), heads) for x in h],      # V_s^{1:L}, Eq. (2)
            "src_padding_mask": [pad],
            "src_content_lengths": [n],
        }
        if self.length_head is not None:
            keep = (~pad).unsqueeze(-1).to(out.hidden.dtype)
            pooled = (out.hidden * keep).sum(dim=1) / keep.sum(dim=1)
            enc["length_logits"] = [self.length_head(pooled)]
        return enc

    def reorder_encoder_out(self, encoder_out, new_order):
        return {k: [t.index_select(0, new_order) for t in v] for k, v in encoder_out.items()}

    def max_positions(self):
        # <s> x </s> and the CTC canvas <s> r|x| </s> must fit the PLM's positions
        usable = self.plm.cfg.usable_positions - 2
        return usable // self.upsample_ratio if self.length_head is None else usable


@register_model("sga", dataclass=SGAConfig)
class SGAModel(FrozenPLMMixin, BaseFairseqModel):
    """A frozen bidirectional PLM with three prompted units; see the module docstring."""

    allow_length_beam = False

    def __init__(self, cfg, encoder, align_prompt, denoise_prompt, dictionary, output_shortlist=None):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.align_prompt = align_prompt
        self.denoise_prompt = denoise_prompt
        self.blank = ctc_blank(dictionary)  # <mask>
        self.bos, self.eos, self.pad = dictionary.bos(), dictionary.eos(), dictionary.pad()
        self.unk = dictionary.unk()
        # plm/shortlist.py: the MLM head scores only these pieces (None: the whole vocabulary);
        # unit() then returns log-probabilities over shortlist positions
        self.output_shortlist = output_shortlist
        # never generated: framing and padding (pad also marks collapsed-away canvas slots)
        self.register_buffer("forbidden", torch.tensor(sorted({self.bos, self.eos, self.pad})), persistent=False)

    @property
    def plm(self):
        return self.encoder.plm

    @classmethod
    def build_model(cls, cfg, task):
        plm = build_task_plm(cfg, task, ("roberta", "bert"),
                             "--arch sga needs a bidirectional encoder (XLM-R or mBERT)")
        if list(task.source_dictionary.symbols) != list(task.target_dictionary.symbols):
            raise FairseqPLMError("SGA reads and writes the PLM's own vocabulary: dict.*.txt must be the same")
        if getattr(task.target_dictionary, "mask_index", None) is None:
            raise FairseqPLMError(f"the dictionary of --plm {cfg.plm} has no mask symbol (CTC blank / Y_blank)")
        if cfg.expect_plm_shape:
            want = preset(cfg.expect_plm_shape)
            got = plm.cfg
            if (got.num_layers, got.hidden_size, got.num_heads) != (want.num_layers, want.hidden_size, want.num_heads):
                raise FairseqPLMError(
                    f"--arch expects a {cfg.expect_plm_shape} PLM ({want.num_layers} layers, d={want.hidden_size}), "
                    f"but --plm {cfg.plm} has {got.num_layers} layers, d={got.hidden_size}; use --arch sga "
                    f"for other PLMs")
        if cfg.upsample_ratio < 1:
            raise FairseqPLMError(f"--upsample-ratio={cfg.upsample_ratio}: expected >= 1")
        tgt = task.target_dictionary
        shortlist = build_output_shortlist(cfg.output_shortlist, tgt, task.cfg.data, task.cfg.source_lang,
                                           task.cfg.target_lang, extra_specials=[ctc_blank(tgt)])
        return cls.from_plm(cfg, maybe_compile(plm, cfg), tgt, shortlist)

    @classmethod
    def from_plm(cls, cfg, plm, dictionary, output_shortlist=None):
        """The three units' parameters around an already loaded (frozen) PLM."""
        c = plm.cfg

        def prompt():
            return DeepPrompt(c.num_layers, c.num_heads, c.head_dim, cfg.prompt_length,
                              scaled=not cfg.no_scaled_reparam)

        length_classes = cfg.max_target_length if cls.predicts_length(cfg) else 0
        encoder = SemanticEncoder(dictionary, plm, prompt(), cfg.upsample_ratio, length_classes)  # theta_ps, W_K, W_V
        return cls(cfg, encoder, prompt(), None if cfg.no_denoising else prompt(), dictionary,    # theta_pa, theta_pd
                   output_shortlist)

    @staticmethod
    def predicts_length(cfg):
        return cfg.alignment == "mask_predict" or cfg.ctc_canvas == "predicted"

    def max_positions(self):
        usable = self.plm.cfg.usable_positions - 2
        if self.cfg.alignment == "ctc" and self.cfg.ctc_canvas == "predicted":
            tgt = usable // self.cfg.upsample_ratio  # the canvas r x |y|
        else:
            tgt = usable // 2 if (self.cfg.alignment == "mask_predict" and self.denoise_prompt is not None) else usable
        return self.encoder.max_positions(), tgt

    # ------------------------------------------------------------------ units

    def unit(self, prompt, canvas, canvas_mask, encoder_out):
        """One generation unit over a canvas: prefix [K_s; K_u], [V_s; V_u] per layer
        (Eq. 3 / Eq. 5), the canvas framed ``<s> ... </s>``, MLM-head log-probabilities at
        the canvas positions [B, T, V]."""
        lengths = canvas_mask.long().sum(dim=1)
        tokens = canvas.masked_fill(~canvas_mask, self.pad)
        framed = frame(tokens, lengths, self.bos, self.eos, self.pad)
        pad = ~lengths_to_mask(lengths + 2, framed.size(1))
        p = prompt()
        prefix = [[(k, v), pk] for k, v, pk in zip(encoder_out["src_keys"], encoder_out["src_values"], p)]
        src_pad = encoder_out["src_padding_mask"][0]
        prefix_pad = torch.cat([src_pad, src_pad.new_zeros(src_pad.size(0), p[0][0].size(2))], dim=1)
        out = self.plm(framed, prefix=prefix, prefix_padding_mask=prefix_pad, padding_mask=pad)
        logits = self.plm.logits(out.hidden[:, 1:1 + canvas.size(1)], self.output_shortlist).float()
        logits = logits.index_fill(-1, self._output_index(self.forbidden), NEVER)
        return F.log_softmax(logits, dim=-1)

    # ------------------------------------------------------------------ output shortlist
    # unit() scores shortlist positions when there is a shortlist; these map between them and ids

    def _output_index(self, ids):
        """Vocabulary ids -> indices into unit()'s last dimension."""
        sl = self.output_shortlist
        return ids if sl is None else sl.to_positions(ids, self.unk)

    def _output_ids(self, index):
        """Indices into unit()'s last dimension -> vocabulary ids."""
        return index if self.output_shortlist is None else self.output_shortlist.to_ids(index)

    @property
    def blank_index(self):
        """The CTC blank as an index into unit()'s output (its id without a shortlist)."""
        return int(self._output_index(torch.tensor(self.blank, device=self.forbidden.device)))

    def ctc_canvas(self, encoder_out, target_lengths=None):
        """Y_blank: r x |x| blanks per sentence (at least one); with ``--ctc-canvas predicted``
        r x |y|, |y| the target's length in training and the predicted one at inference."""
        if self.cfg.ctc_canvas == "predicted":
            n = target_lengths if target_lengths is not None else self._predicted_lengths(encoder_out)
            n = n.clamp(min=1) * self.cfg.upsample_ratio
        else:
            n = encoder_out["src_content_lengths"][0].clamp(min=1) * self.cfg.upsample_ratio
        mask = lengths_to_mask(n)
        return torch.full(mask.shape, self.blank, dtype=torch.long, device=mask.device), mask

    def _collapse(self, lprobs, canvas_mask):
        scores, tokens = lprobs.max(dim=-1)
        return ctc_collapse_in_place(self._output_ids(tokens), self.blank, self.pad, canvas_mask, scores)

    def _denoiser_input(self, tokens, canvas_mask):
        """In-place collapsed canvas -> denoiser input: removed slots read as blank/<mask>."""
        return tokens.masked_fill(tokens.eq(self.pad) & canvas_mask, self.blank)

    # ------------------------------------------------------------------ training

    def forward(self, src_tokens, src_lengths, prev_output_tokens=None, tgt_tokens=None, **unused):
        """Loss terms in the style of fairseq's NAT models, consumed by ``plm_nat_loss``."""
        enc = self.encoder(src_tokens, src_lengths)
        target = tgt_tokens.masked_fill(tgt_tokens.eq(self.eos), self.pad)  # y without </s>
        target_mask = target.ne(self.pad)
        # what the losses compare unit() outputs with: shortlist positions under a shortlist
        scored_target, blank = self._output_index(target), self.blank_index
        terms = {}
        if self.predicts_length(self.cfg):
            lengths = target_mask.long().sum(dim=1).clamp(max=self.cfg.max_target_length - 1)
            terms["length"] = {"lprobs": F.log_softmax(enc["length_logits"][0].float(), dim=-1),
                               "targets": lengths, "mask": None, "factor": self.cfg.length_loss_factor,
                               "no_smoothing": True}
        if self.cfg.alignment == "ctc":
            canvas, canvas_mask = self.ctc_canvas(enc, target_mask.long().sum(dim=1))
            lprobs = self.unit(self.align_prompt, canvas, canvas_mask, enc)                  # Eq. (4)
            terms["align-ctc"] = {"ctc": True, "lprobs": lprobs, "input_mask": canvas_mask,
                                  "targets": scored_target, "target_mask": target_mask, "blank": blank}
            if self.denoise_prompt is not None:
                t0 = self._collapse(lprobs.detach(), canvas_mask)[0]
                noisy_in = self._denoiser_input(t0, canvas_mask)
        else:
            masked = random_target_mask(target_mask)
            lprobs = self.unit(self.align_prompt, target.masked_fill(masked, self.blank), target_mask, enc)
            terms["align-mask-predict"] = {"lprobs": lprobs, "targets": scored_target, "mask": masked}
            if self.denoise_prompt is not None:
                t0 = torch.where(masked, self._output_ids(lprobs.detach().argmax(-1)), target)  # the alignment's output
                noisy_in, canvas_mask = upsample_by_duplication(t0, target_mask)
        if self.denoise_prompt is not None:
            if self.training:
                noisy_in = deletion_repetition_noise(noisy_in, canvas_mask, self.blank, self.cfg.noise_prob)
            terms["denoise-ctc"] = self.denoiser_training_term(noisy_in, canvas_mask, scored_target, target_mask, enc)
        return terms

    def denoiser_training_term(self, noisy_t0, canvas_mask, target, target_mask, enc):
        """L_2 (§4.4): CTC of Y given the denoiser's output on each of its training inputs
        (``target``: Y as indices into unit()'s output, i.e. shortlist positions under a shortlist).

        ``own_outputs`` (default, the paper: "the CTC loss L_2 given training pair (Y, T_i)
        where T_i is the output sequence at the i-th step"): the inputs are T~_0 (the
        alignment's output with deletion/repetition noise, Eq. 6) and then the denoiser's own
        outputs T_i = B(argmax f_LM(theta_pd, T_{i-1})) collapsed in place, for
        ``--denoise-train-steps`` inputs in all, as the inference loop feeds them. Our reading:
        the noise of Eq. (6) is applied to T_0 only (the paper writes T~_0; the later T_i are
        fed back as they are at inference), each T_i is detached (a fixed input, as at
        inference), and L_2 is the mean over the inputs, so that Eq. (7) stays L_1 + L_2 at any
        number of steps. ``noised_t0``: the noised T_0 alone (one input)."""
        steps = self.cfg.denoise_train_steps if self.cfg.denoiser_training == "own_outputs" else 1
        if steps < 1:
            raise FairseqPLMError(f"--denoise-train-steps={steps}: expected >= 1")
        inputs, lprobs = noisy_t0, []
        for i in range(steps):
            lp = self.unit(self.denoise_prompt, inputs, canvas_mask, enc)                   # Eq. (6)
            lprobs.append(lp)
            if i + 1 < steps:  # T_{i+1}, the next input: fed back as at inference
                inputs = self._denoiser_input(self._collapse(lp.detach(), canvas_mask)[0], canvas_mask)
        # the steps as one batch: one CTC term, its per-token mean is the mean over the steps
        return {"ctc": True, "lprobs": torch.cat(lprobs, dim=0), "input_mask": canvas_mask.repeat(steps, 1),
                "targets": target.repeat(steps, 1), "target_mask": target_mask.repeat(steps, 1),
                "blank": self.blank_index}

    # ------------------------------------------------------------------ inference
    # fairseq's IterativeRefinementGenerator contract: forward_encoder, initialize_output_tokens,
    # forward_decoder returning DecoderOut. Output tokens are canvases with collapsed-away
    # slots set to <pad>: the generator strips pads, so what it finalizes is B(T_i), and a
    # loop whose output equals its input is a fixed point, where the generator stops.

    def forward_encoder(self, encoder_inputs):
        return self.encoder(*encoder_inputs)

    def initialize_output_tokens(self, encoder_out, src_tokens):
        if self.cfg.alignment == "ctc":
            canvas, mask = self.ctc_canvas(encoder_out)
        else:
            mask = lengths_to_mask(self._predicted_lengths(encoder_out))
            canvas = torch.full(mask.shape, self.blank, dtype=torch.long, device=mask.device)
        canvas = canvas.masked_fill(~mask, self.pad)
        scores = canvas.new_zeros(canvas.shape, dtype=torch.float)
        return DecoderOut(output_tokens=canvas, output_scores=scores, attn=None, step=0, max_step=0, history=None)

    def _predicted_lengths(self, encoder_out):
        """The length predictor's argmax, at most the longest target whose canvas fits the PLM's
        positions (``max_positions()``: 2n for the Mask-Predict denoiser, r n for sga_ctc_free):
        its classes reach ``--max-target-length``, which a barely trained predictor may choose."""
        return encoder_out["length_logits"][0].argmax(dim=-1).clamp(min=1, max=self.max_positions()[1])

    def forward_decoder(self, decoder_out, encoder_out, decoding_format=None, **unused):
        step, tokens = decoder_out.step, decoder_out.output_tokens
        if step == 0:
            if self.cfg.alignment == "ctc":
                canvas, canvas_mask = self.ctc_canvas(encoder_out)
                out, _, scores = self._collapse(self.unit(self.align_prompt, canvas, canvas_mask, encoder_out),
                                                canvas_mask)
            elif self.cfg.mask_predict_iterations > 0:
                out, scores = self.mask_predict(encoder_out)
            else:
                out, scores = self.zero_iteration_alignment(encoder_out)
        elif self.denoise_prompt is None:
            return decoder_out  # nothing to refine: a fixed point, the generator stops
        else:
            canvas_mask = self._denoise_canvas(encoder_out)
            if self.cfg.alignment == "mask_predict" and step == 1 and self.cfg.mask_predict_iterations > 0:
                n = self._predicted_lengths(encoder_out)
                tokens, _ = upsample_by_duplication(tokens[:, :int(n.max())], lengths_to_mask(n))
            tokens = tokens[:, :canvas_mask.size(1)]  # finished sentences may have left wider ones
            canvas = self._denoiser_input(tokens, canvas_mask)
            out, _, scores = self._collapse(self.unit(self.denoise_prompt, canvas, canvas_mask, encoder_out),
                                            canvas_mask)
        history = None if decoder_out.history is None else decoder_out.history + [out.clone()]
        return decoder_out._replace(output_tokens=out, output_scores=scores, attn=None, history=history)

    def _denoise_canvas(self, encoder_out):
        if self.cfg.alignment == "ctc":
            return self.ctc_canvas(encoder_out)[1]
        return lengths_to_mask(self._predicted_lengths(encoder_out) * 2)

    def zero_iteration_alignment(self, encoder_out):
        """Table 4, "# Iter. 0" ("using CTC alignment alone"): no Mask-Predict pass; the CTC
        denoiser reads Y_blank, a canvas of 2 x the predicted length (the x2 of §4.4) holding
        only ``<mask>``, and its collapsed output is T_0. Later steps are ordinary denoising
        loops (``--iter-decode-max-iter 0``: this CTC alignment alone). Our reading of the row;
        the other one, a separately trained model whose alignment unit is CTC over a canvas of
        r x the predicted length, is ``--arch sga_ctc_free`` (``--ctc-canvas predicted``)."""
        if self.denoise_prompt is None:
            raise FairseqPLMError("mask_predict_iterations=0 aligns with the CTC denoiser, and this model has "
                                  "none (--arch sga_mask_predict_no_denoising): use 1 or more iterations")
        canvas_mask = self._denoise_canvas(encoder_out)
        canvas = torch.full(canvas_mask.shape, self.blank, dtype=torch.long, device=canvas_mask.device)
        out, _, scores = self._collapse(self.unit(self.denoise_prompt, canvas, canvas_mask, encoder_out), canvas_mask)
        return out, scores

    @torch.no_grad()
    def mask_predict(self, encoder_out):
        """Mask-Predict decoding (Ghazvininejad et al. 2019) for ``mask_predict_iterations``
        iterations over a canvas of the predicted length, batched over sentences."""
        lengths = self._predicted_lengths(encoder_out)
        canvas_mask = lengths_to_mask(lengths)
        tokens = torch.full(canvas_mask.shape, self.blank, dtype=torch.long, device=lengths.device)
        scores = torch.zeros(canvas_mask.shape, device=lengths.device)
        iterations = max(1, self.cfg.mask_predict_iterations)
        for t in range(iterations):
            masked = tokens.eq(self.blank) & canvas_mask
            lp = self.unit(self.align_prompt, tokens, canvas_mask, encoder_out)
            lp = lp.index_fill(-1, lp.new_tensor([self.blank_index], dtype=torch.long), NEVER)
            new_scores, new_tokens = lp.max(dim=-1)
            new_tokens = self._output_ids(new_tokens)
            tokens = torch.where(masked, new_tokens, tokens)
            scores = torch.where(masked, new_scores, scores)
            if t + 1 < iterations:
                remask = lowest_scores_mask(scores, canvas_mask, mask_predict_count(lengths, t, iterations))
                tokens = tokens.masked_fill(remask, self.blank)
        return tokens.masked_fill(~canvas_mask, self.pad), scores.masked_fill(~canvas_mask, 0.0)


def _sga_preset(args, preset_name):
    args.expect_plm_shape = getattr(args, "expect_plm_shape", None) or preset_name


# XLM-R base and large (Table 1): the same units; the architecture checks the PLM's shape
@register_model_architecture("sga", "sga_xlmr_base")
def sga_xlmr_base(args):
    _sga_preset(args, "xlmr-base")


@register_model_architecture("sga", "sga_xlmr_large")
def sga_xlmr_large(args):
    _sga_preset(args, "xlmr-large")


@register_model_architecture("sga", "sga_no_denoising")
def sga_no_denoising(args):
    args.no_denoising = getattr(args, "no_denoising", True)


@register_model_architecture("sga", "sga_xlmr_base_no_denoising")
def sga_xlmr_base_no_denoising(args):
    sga_no_denoising(args)
    sga_xlmr_base(args)


@register_model_architecture("sga", "sga_xlmr_large_no_denoising")
def sga_xlmr_large_no_denoising(args):
    sga_no_denoising(args)
    sga_xlmr_large(args)


# free generation with CTC alignment over r x the predicted target length: Table 4's
# zero-iteration row read as a separately trained CTC model (the default reading is
# mask_predict_iterations=0 on the Mask-Predict model, see ``zero_iteration_alignment``)
@register_model_architecture("sga", "sga_ctc_free")
def sga_ctc_free(args):
    args.ctc_canvas = getattr(args, "ctc_canvas", "predicted")


@register_model_architecture("sga", "sga_ctc_free_no_denoising")
def sga_ctc_free_no_denoising(args):
    sga_no_denoising(args)
    sga_ctc_free(args)


# free generation (question / story generation, Table 3-4): Mask-Predict alignment
@register_model_architecture("sga", "sga_mask_predict")
def sga_mask_predict(args):
    args.alignment = getattr(args, "alignment", "mask_predict")


@register_model_architecture("sga", "sga_mask_predict_no_denoising")
def sga_mask_predict_no_denoising(args):
    sga_no_denoising(args)
    sga_mask_predict(args)

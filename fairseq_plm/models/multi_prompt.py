"""Several prompt sets on one frozen PLM, decoded in one batch: each row of a batch carries its
own direction (its own prompts), and the PLM runs one forward per decoding step for the whole
batch. Used by ``fairseq_plm.api.Translator`` (and so by ``fairseq-plm-interactive
--direction`` and ``fairseq-plm-serve``); not a registered fairseq model.

``MultiPromptGPT`` (MSP, its Table 5 variants, prefix tuning, prompt tuning) is a fairseq
encoder-decoder for ``SequenceGenerator`` (beam search):

* encoding: every direction present in the batch runs its own encoder (its encoding and
  re-encoding stages, MSP Eq. 4-5) on its rows, so a sentence is encoded exactly as it is
  alone; the outputs are merged into per-row prefixes;
* decoding (MSP Eq. 6): one PLM forward per step for all rows. Layer l's prefix is
  [P_d of the row's direction; H_r of the row]: the directions' decoding prompts are laid
  side by side in one batch-shared table [1, H, K*L, D] (K directions present, shorter prompts
  padded), and each row's mask hides every position but its own direction's, so no per-row
  copy of a prompt is made at any step (a single direction's prompt is its own table); the
  rows' masks are built once per batch by the encoder and reordered with the beams;
* length: each row stops at its own limit, ``max_len_a * |x| + max_len_b`` of its direction
  and the PLM's last position (single-stage prompting and prompt tuning put the target after
  the source). fairseq caps a whole batch by its longest source instead; per-row limits make
  a row's translation independent of the rows it is batched with.

``MultiPromptSGA`` (SGA, its variants) is the same for ``IterativeRefinementGenerator``: every
direction runs its semantic encoder (Eq. 1-2) on its rows; each alignment (Eq. 4, CTC or
Mask-Predict) and denoising (Eq. 6) pass is one PLM forward over all rows that take it, with
the row's own unit prompt (gathered per row and layer from a [K, H, L, D] table: its passes
have many queries, where concatenated keys are the fast path), upsampling ratio, Mask-Predict
iterations and ``--iter-decode-max-iter``. Its per-row steps follow
``SGAModel.forward_decoder`` / ``SGAModel.mask_predict`` exactly (tested against them).
"""

from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.iterative_refinement_generator import DecoderOut
from fairseq.models import FairseqEncoder, FairseqEncoderDecoderModel

from ..nat.ctc import NEVER
from ..nat.refinement import lengths_to_mask, lowest_scores_mask, mask_predict_count, upsample_by_duplication
from ..plm.vocab import frame
from .msp import CachedPLMDecoder


# ------------------------------------------------------------------------------ shared pieces

def _prompt_table(prompts, like, flat=False):
    """Per-direction prompts (each a per-layer list of (keys, values) [1, H, L_k, D], or []
    for none) -> per layer (keys, values) [K, H, L, D] with L = max L_k, and a padding mask
    [K, L] (True = not a prompt position). None when no direction has a prompt.

    ``flat``: with K > 1, each layer's table is laid out as one batch-shared segment
    [1, H, K*L, D] (direction k's prompt at positions k*L..k*L+L-1) instead; a row then attends
    to it with the other directions' positions masked (``_flat_table_mask``)."""
    lengths = [p[0][0].size(2) if p else 0 for p in prompts]
    width = max(lengths)
    if width == 0:
        return None, None
    layers = len(next(p for p in prompts if p))
    mask = torch.ones(len(prompts), width, dtype=torch.bool, device=like.device)
    for k, n in enumerate(lengths):
        mask[k, :n] = False
    table = []
    for layer in range(layers):
        kv = []
        for j in (0, 1):
            parts = []
            for p, n in zip(prompts, lengths):
                if n:
                    t = p[layer][j]
                else:
                    ref = next(q for q in prompts if q)[layer][j]
                    t = ref.new_zeros(1, ref.size(1), 0, ref.size(3))
                if n < width:
                    t = F.pad(t, (0, 0, 0, width - n))
                parts.append(t)
            # flat: the padded [1, H, L, D] prompts side by side on the key axis
            kv.append(torch.cat(parts, dim=2 if flat and len(prompts) > 1 else 0))
        table.append(tuple(kv))
    return table, mask


def _flat_table_mask(mask, slots):
    """Padding mask [B, K*L] of a flat prompt table (``_prompt_table(flat=True)``) for rows of
    directions ``slots``: a row sees its own direction's prompt positions only. Masked keys get
    weight exactly 0, so the attention equals the row's prompt alone (MSP Eq. 6)."""
    k = mask.size(0)
    own = torch.arange(k, device=slots.device)[None, :] == slots[:, None]  # [B, K]
    return (~own[:, :, None] | mask[None, :, :]).reshape(slots.size(0), -1)


class RowPrefixes:
    """Per-layer prefix segments computed on access: layer l gives
    ``[*before, (table keys, values) gathered by row slot, *after]``. The PLM reads one
    layer at a time, so the gathered prompts of one layer exist at a time. (SGA's passes; MSP's
    decoding steps read a flat table instead and need no gathering.)"""

    def __init__(self, table, slots, before=(), after=()):
        self.table, self.slots = table, slots
        self.before, self.after = list(before), list(after)  # per layer lists of (keys, values)
        self._cached = (None, None)

    def __len__(self):
        return len(self.table) if self.table is not None else len((self.before or self.after)[0])

    def __getitem__(self, i):
        if self._cached[0] == i:
            return self._cached[1]
        segments = [seg[i] for seg in self.before]
        if self.table is not None:
            k, v = self.table[i]
            if k.size(0) > 1:  # a single direction stays one shared [1, H, L, D] segment
                k, v = k.index_select(0, self.slots), v.index_select(0, self.slots)
            segments.append((k, v))
        segments += [seg[i] for seg in self.after]
        self._cached = (i, segments)
        return segments


def _pad_rows(tensors, rows, total, width, dim, fill=0):
    """Scatter per-direction row blocks (tensors[k] holds rows ``rows[k]``) into one tensor of
    ``total`` rows, padding dimension ``dim`` to ``width``."""
    first = tensors[0]
    shape = list(first.shape)
    shape[0], shape[dim] = total, width
    out = first.new_full(shape, fill)
    for t, r in zip(tensors, rows):
        if t.size(dim) < width:
            pad = [0, 0] * (t.dim() - dim - 1) + [0, width - t.size(dim)]
            t = F.pad(t, pad, value=fill)
        out.index_copy_(0, r, t)
    return out


def _per_row(rows, values, b):
    """Per-direction [b_k] values -> one [b] tensor in row order."""
    out = values[0].new_zeros(b)
    for r, v in zip(rows, values):
        out.index_copy_(0, r, v)
    return out


def _groups(directions):
    """(direction index, its rows) for each direction present, in index order."""
    return [(int(k), (directions == k).nonzero(as_tuple=False).squeeze(1)) for k in torch.unique(directions)]


def _trim(src_tokens, pad):
    """Right-padded rows cut to their own longest sentence (as a batch of them alone)."""
    n = int(src_tokens.ne(pad).long().sum(dim=1).max())
    return src_tokens[:, :max(n, 1)]


# ------------------------------------------------------------------------------ MSP family

class MultiPromptGPTEncoder(FairseqEncoder):
    def __init__(self, models, limits):
        super().__init__(models[0].encoder.dictionary)
        self.models = nn.ModuleList(models)
        self.limits = limits  # per direction (max_len_a, max_len_b)
        self.plm = models[0].plm
        self.padding_idx = self.dictionary.pad()
        self.eos = self.dictionary.eos()

    def forward(self, src_tokens, src_lengths=None, directions=None, **unused):
        if directions is None:
            directions = src_tokens.new_zeros(src_tokens.size(0))
        b = src_tokens.size(0)
        groups = _groups(directions)
        outs = []
        for k, rows in groups:
            sub = _trim(src_tokens.index_select(0, rows), self.padding_idx)
            outs.append(self.models[k].encoder(sub, None if src_lengths is None else src_lengths[rows]))
        prompts = [list(zip(o["prompt_keys"], o["prompt_values"])) for o in outs]
        # decoding steps read the directions' prompts as one batch-shared flat table, so no
        # per-row copy of a prompt is gathered per layer and step (the cost of mixing directions)
        table, prompt_mask = _prompt_table(prompts, src_tokens, flat=True)
        rows = [r for _, r in groups]
        slot_of = {k: j for j, (k, _) in enumerate(groups)}
        slots = torch.tensor([slot_of[int(k)] for k in directions.tolist()], device=src_tokens.device)
        widths = [o["src_keys"][0].size(2) for o in outs]
        width = max(widths)
        layers = len(outs[0]["src_keys"])
        src_keys = [_pad_rows([o["src_keys"][i] for o in outs], rows, b, width, 2) for i in range(layers)]
        src_values = [_pad_rows([o["src_values"][i] for o in outs], rows, b, width, 2) for i in range(layers)]
        src_mask = _pad_rows([o["prefix_padding_mask"][0][:, o["prefix_padding_mask"][0].size(1) - w:]
                              for o, w in zip(outs, widths)], rows, b, width, 1, fill=True)
        if table is not None:
            # each row's mask over [the flat prompt table; its source], built once per batch and
            # reordered with the beams like the source (decoding steps only read it)
            pm = _flat_table_mask(prompt_mask, slots) if len(groups) > 1 else prompt_mask.expand(b, -1)
            src_mask = torch.cat([pm, src_mask], dim=1)
        offset = _per_row(rows, [o["target_offset"][0].long() for o in outs], b)
        # per-row length limits: the direction's max_len_a * |x| + max_len_b (|x| without
        # </s>, as SequenceGenerator counts it) and the PLM's last position
        n = (src_tokens.ne(self.padding_idx) & src_tokens.ne(self.eos)).long().sum(dim=1)
        a = src_tokens.new_tensor([self.limits[k][0] for k in directions.tolist()], dtype=torch.float64)
        c = src_tokens.new_tensor([self.limits[k][1] for k in directions.tolist()], dtype=torch.float64)
        limit = torch.minimum((a * n + c).long(), self.plm.cfg.max_positions - 1 - offset).clamp(min=1)
        return {"src_keys": src_keys, "src_values": src_values, "prefix_padding_mask": [src_mask],
                "target_offset": [offset], "max_len": [limit],
                "prompt_keys": [] if table is None else [k for k, _ in table],
                "prompt_values": [] if table is None else [v for _, v in table]}

    def reorder_encoder_out(self, encoder_out, new_order):
        return {k: (v if k.startswith("prompt_") else [t.index_select(0, new_order) for t in v])
                for k, v in encoder_out.items()}

    def max_positions(self):
        return min(m.encoder.max_positions() for m in self.models)


class MultiPromptGPTDecoder(CachedPLMDecoder):
    """MSP Eq. (6) for rows of several directions: the frozen PLM continues behind each row's
    [P_d; H_r], with a KV cache in fairseq's incremental state."""

    def __init__(self, dictionary, plm):
        super().__init__(dictionary, plm)
        self.eos = dictionary.eos()

    def forward(self, prev_output_tokens, encoder_out=None, incremental_state=None, features_only=False, **unused):
        # the prompt segment is the directions' flat table; each row's mask shows its own block
        out, steps = self.continue_prefix(prev_output_tokens, encoder_out, incremental_state)
        if features_only:
            return out.hidden, {"attn": [None], "inner_states": None}
        logits = self.plm.logits(out.hidden)
        stop = steps[None, :] >= encoder_out["max_len"][0][:, None]  # [B, T]: only </s> may follow
        if stop.any():
            eos_only = torch.full_like(logits[0, 0], float("-inf"))
            eos_only[self.eos] = 0.0
            logits = torch.where(stop[..., None], eos_only, logits)
        return logits, {"attn": [None], "inner_states": None}


class MultiPromptGPT(FairseqEncoderDecoderModel):
    """Directions = prompt models (msp, prefix_tuning, prompt_tuning) sharing one frozen GPT.
    ``limits[k]`` = (max_len_a, max_len_b) of direction k. Rows choose their direction with
    ``net_input["directions"]`` (index into ``models``)."""

    def __init__(self, models: List[nn.Module], limits):
        plm = models[0].plm
        if any(m.plm is not plm for m in models):
            raise ValueError("MultiPromptGPT needs directions that share one PLM instance")
        super().__init__(MultiPromptGPTEncoder(models, limits),
                         MultiPromptGPTDecoder(models[0].decoder.dictionary, plm))

    def max_positions(self):
        return self.encoder.max_positions(), self.decoder.max_positions()


# ------------------------------------------------------------------------------ SGA

class _SGAEncoder(nn.Module):
    """What ``IterativeRefinementGenerator`` calls on ``model.encoder``."""

    @staticmethod
    def reorder_encoder_out(encoder_out, new_order):
        new_order = new_order.reshape(-1)  # the generator may pass a 0-d index for one row
        return {k: (v if k.startswith("table_") else [t.index_select(0, new_order) for t in v])
                for k, v in encoder_out.items()}


class MultiPromptSGA(nn.Module):
    """Directions = SGA models sharing one frozen XLM-R/mBERT, for fairseq's
    ``IterativeRefinementGenerator``. Set ``directions`` ([B] indices into ``models``, the
    rows of the next ``generate`` call) before generating; ``max_iters[k]`` is direction k's
    ``--iter-decode-max-iter``."""

    allow_length_beam = False
    allow_ensemble = False

    def __init__(self, models, max_iters):
        super().__init__()
        plm = models[0].plm
        if any(m.plm is not plm for m in models):
            raise ValueError("MultiPromptSGA needs directions that share one PLM instance")
        self.models = nn.ModuleList(models)
        self.max_iters = list(max_iters)
        self.plm = plm
        m = models[0]
        self.blank, self.bos, self.eos, self.pad = m.blank, m.bos, m.eos, m.pad
        self.encoder = _SGAEncoder()
        self.directions = None

    # ------------------------------------------------------------------ encoder

    def forward_encoder(self, encoder_inputs):
        src_tokens, src_lengths = encoder_inputs
        directions = self.directions
        if directions is None:
            directions = src_tokens.new_zeros(src_tokens.size(0))
        b, dev = src_tokens.size(0), src_tokens.device
        groups = _groups(directions.to(dev))
        rows = [r for _, r in groups]
        outs = []
        for k, r in groups:
            sub = _trim(src_tokens.index_select(0, r), self.pad)
            outs.append(self.models[k].encoder(sub, src_lengths[r]))
        width = max(o["src_keys"][0].size(2) for o in outs)
        layers = len(outs[0]["src_keys"])
        enc = {
            "src_keys": [_pad_rows([o["src_keys"][i] for o in outs], rows, b, width, 2) for i in range(layers)],
            "src_values": [_pad_rows([o["src_values"][i] for o in outs], rows, b, width, 2) for i in range(layers)],
            "src_padding_mask": [_pad_rows([o["src_padding_mask"][0] for o in outs], rows, b, width, 1, fill=True)],
            "src_content_lengths": [_per_row(rows, [o["src_content_lengths"][0] for o in outs], b)],
        }
        pred = []
        for (k, _), o in zip(groups, outs):
            m = self.models[k]
            n = o["src_content_lengths"][0]
            pred.append(m._predicted_lengths(o) if m.cfg.alignment == "mask_predict" else torch.zeros_like(n))
        enc["predicted_lengths"] = [_per_row(rows, pred, b)]
        slot_of = {k: j for j, (k, _) in enumerate(groups)}
        enc["slot"] = [torch.tensor([slot_of[int(k)] for k in directions.tolist()], device=dev)]
        cfgs = [self.models[k].cfg for k in directions.tolist()]
        enc["mask_predict"] = [torch.tensor([c.alignment == "mask_predict" for c in cfgs], device=dev)]
        enc["ratio"] = [torch.tensor([c.upsample_ratio for c in cfgs], device=dev)]
        enc["iterations"] = [torch.tensor([max(1, c.mask_predict_iterations) for c in cfgs], device=dev)]
        enc["denoise"] = [torch.tensor([self.models[k].denoise_prompt is not None for k in directions.tolist()],
                                       device=dev)]
        enc["max_iter"] = [torch.tensor([self.max_iters[k] for k in directions.tolist()], device=dev)]
        like = src_tokens
        align, align_mask = _prompt_table([self.models[k].align_prompt() for k, _ in groups], like)
        denoise, denoise_mask = _prompt_table(
            [self.models[k].denoise_prompt() if self.models[k].denoise_prompt is not None else []
             for k, _ in groups], like)
        enc["table_align"], enc["table_align_mask"] = align, [align_mask]
        enc["table_denoise"] = denoise if denoise is not None else []
        enc["table_denoise_mask"] = [] if denoise is None else [denoise_mask]
        return enc

    # ------------------------------------------------------------------ one unit, all rows

    def unit(self, which, canvas, canvas_mask, enc):
        """``SGAModel.unit`` with each row's own prompt: prefix [K_s; K_u] / [V_s; V_u]
        (Eq. 3 / Eq. 5) with K_u, V_u the unit prompt of the row's direction."""
        lengths = canvas_mask.long().sum(dim=1)
        tokens = canvas.masked_fill(~canvas_mask, self.pad)
        framed = frame(tokens, lengths, self.bos, self.eos, self.pad)
        pad = ~lengths_to_mask(lengths + 2, framed.size(1))
        table = enc["table_" + which]
        table_mask = enc["table_" + which + "_mask"][0]
        slots = enc["slot"][0]
        src = list(zip(enc["src_keys"], enc["src_values"]))
        prefix = RowPrefixes(table, slots, before=[src])
        src_pad = enc["src_padding_mask"][0]
        pm = table_mask.index_select(0, slots) if table_mask.size(0) > 1 else table_mask.expand(slots.size(0), -1)
        out = self.plm(framed, prefix=prefix, prefix_padding_mask=torch.cat([src_pad, pm], dim=1), padding_mask=pad)
        logits = self.plm.logits(out.hidden[:, 1:1 + canvas.size(1)]).float()
        logits = logits.index_fill(-1, self.models[0].forbidden, NEVER)
        return F.log_softmax(logits, dim=-1)

    def _collapse(self, lprobs, canvas_mask):
        return self.models[0]._collapse(lprobs, canvas_mask)

    # ------------------------------------------------------------------ generator contract

    def initialize_output_tokens(self, encoder_out, src_tokens):
        mask = self._align_canvas_mask(encoder_out)
        canvas = torch.full(mask.shape, self.blank, dtype=torch.long, device=mask.device).masked_fill(~mask, self.pad)
        return DecoderOut(output_tokens=canvas, output_scores=canvas.new_zeros(canvas.shape, dtype=torch.float),
                          attn=None, step=0, max_step=0, history=None)

    def _align_canvas_mask(self, enc):
        """CTC rows: r x |x| blanks (at least one source token); Mask-Predict rows: the
        predicted length."""
        n = enc["src_content_lengths"][0].clamp(min=1) * enc["ratio"][0]
        n = torch.where(enc["mask_predict"][0], enc["predicted_lengths"][0], n)
        return lengths_to_mask(n)

    def _denoise_canvas_mask(self, enc):
        n = enc["src_content_lengths"][0].clamp(min=1) * enc["ratio"][0]
        n = torch.where(enc["mask_predict"][0], enc["predicted_lengths"][0] * 2, n)
        return lengths_to_mask(n)

    def forward_decoder(self, decoder_out, encoder_out, decoding_format=None, **unused):
        step, tokens, scores = decoder_out.step, decoder_out.output_tokens, decoder_out.output_scores
        enc = encoder_out
        if step == 0:
            out, new_scores = self._align(enc)
        else:
            # rows that denoise at this step: the rest keep their output (a fixed point ends them)
            todo = enc["denoise"][0] & (step <= enc["max_iter"][0])
            if not todo.any():
                return decoder_out
            rows = todo.nonzero(as_tuple=False).squeeze(1)
            d_out, d_scores = self._denoise(step, tokens.index_select(0, rows), _SGAEncoder.reorder_encoder_out(enc, rows))
            width = max(tokens.size(1), d_out.size(1))
            out = F.pad(tokens, (0, width - tokens.size(1)), value=self.pad)
            new_scores = F.pad(scores, (0, width - scores.size(1)))
            out[rows] = F.pad(d_out, (0, width - d_out.size(1)), value=self.pad)
            new_scores[rows] = F.pad(d_scores, (0, width - d_scores.size(1)))
        history = None if decoder_out.history is None else decoder_out.history + [out.clone()]
        return decoder_out._replace(output_tokens=out, output_scores=new_scores, attn=None, history=history)

    def _align(self, enc):
        """Step 0 (§4.3): the alignment unit for every row in one forward; Mask-Predict rows
        then run their remaining iterations."""
        mp = enc["mask_predict"][0]
        canvas_mask = self._align_canvas_mask(enc)
        canvas = torch.full(canvas_mask.shape, self.blank, dtype=torch.long, device=canvas_mask.device)
        lprobs = self.unit("align", canvas, canvas_mask, enc)
        out, _, scores = self._collapse(lprobs, canvas_mask)
        if mp.any():
            rows = mp.nonzero(as_tuple=False).squeeze(1)
            sub = _SGAEncoder.reorder_encoder_out(enc, rows)
            lp = lprobs.index_select(0, rows)
            mp_tokens, mp_scores = self._mask_predict(sub, lp, canvas_mask.index_select(0, rows))
            w = mp_tokens.size(1)
            out[rows] = F.pad(mp_tokens, (0, out.size(1) - w), value=self.pad)
            scores[rows] = F.pad(mp_scores, (0, out.size(1) - w))
        return out, scores

    @torch.no_grad()
    def _mask_predict(self, enc, first_lprobs, canvas_mask):
        """``SGAModel.mask_predict`` row by row in one batch: each row runs its direction's
        number of iterations over a canvas of its predicted length; iteration 0's
        log-probabilities come from the batch-wide alignment pass."""
        lengths = enc["predicted_lengths"][0]
        iterations = enc["iterations"][0]
        canvas_mask = canvas_mask[:, :int(lengths.max())]
        tokens = torch.full(canvas_mask.shape, self.blank, dtype=torch.long, device=lengths.device)
        scores = torch.zeros(canvas_mask.shape, device=lengths.device)
        for t in range(int(iterations.max())):
            active = (iterations > t).nonzero(as_tuple=False).squeeze(1)
            every = active.numel() == tokens.size(0)
            a_tokens, a_scores, a_mask = (x if every else x.index_select(0, active)
                                          for x in (tokens, scores, canvas_mask))
            masked = a_tokens.eq(self.blank) & a_mask
            if t == 0:
                lp = first_lprobs[:, :a_tokens.size(1)]
            else:
                lp = self.unit("align", a_tokens, a_mask, enc if every else _SGAEncoder.reorder_encoder_out(enc, active))
            lp = lp.index_fill(-1, lp.new_tensor([self.blank], dtype=torch.long), NEVER)
            new_scores, new_tokens = lp.max(dim=-1)
            a_tokens = torch.where(masked, new_tokens, a_tokens)
            a_scores = torch.where(masked, new_scores, a_scores)
            a_iters, a_lengths = iterations.index_select(0, active), lengths.index_select(0, active)
            remask = lowest_scores_mask(a_scores, a_mask, mask_predict_count(a_lengths, t, a_iters))
            a_tokens = a_tokens.masked_fill(remask, self.blank)  # no-op on a row's last iteration
            tokens[active], scores[active] = a_tokens, a_scores
        return tokens.masked_fill(~canvas_mask, self.pad), scores.masked_fill(~canvas_mask, 0.0)

    def _denoise(self, step, tokens, enc):
        """Steps 1.. (§4.4, Eq. 6): Mask-Predict rows first double their tokens (step 1);
        the CTC denoiser reads the in-place collapsed canvas."""
        canvas_mask = self._denoise_canvas_mask(enc)
        mp = enc["mask_predict"][0]
        if step == 1 and mp.any():
            n = enc["predicted_lengths"][0]
            width = max(canvas_mask.size(1), tokens.size(1))
            tokens = F.pad(tokens, (0, width - tokens.size(1)), value=self.pad)
            rows = mp.nonzero(as_tuple=False).squeeze(1)
            nm = n.index_select(0, rows)
            doubled, _ = upsample_by_duplication(tokens.index_select(0, rows)[:, :int(nm.max())], lengths_to_mask(nm))
            tokens[rows] = F.pad(doubled, (0, width - doubled.size(1)), value=self.pad)
        if tokens.size(1) < canvas_mask.size(1):
            tokens = F.pad(tokens, (0, canvas_mask.size(1) - tokens.size(1)), value=self.pad)
        tokens = tokens[:, :canvas_mask.size(1)]
        canvas = tokens.masked_fill(tokens.eq(self.pad) & canvas_mask, self.blank)
        out, _, scores = self._collapse(self.unit("denoise", canvas, canvas_mask, enc), canvas_mask)
        return out, scores

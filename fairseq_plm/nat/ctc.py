"""CTC (Graves et al. 2006) for non-autoregressive generation (Libovický & Helcl 2018).

Everything here is batched over right-padded tensors; no Python loop runs per sentence.

Blank: the NAT models of this package use the PLM's ``<mask>`` symbol as the CTC blank
(``blank_index``). Reasons: it is never a target token (no tokenizer emits it), the MLM head
already scores it, and a blank fed back into the denoiser reads as ``<mask>``: "nothing
decided here", which is what masked-LM pre-training taught the PLM. (The SGA authors' code
used the piece "▁", a frequent real token that then could never be generated.)
"""

import torch
import torch.nn.functional as F

# logit of symbols a model must never output (padding, framing). Finite on purpose: an
# -inf log-probability makes torch's CTC backward produce NaN (-inf - -inf).
NEVER = -1e9


def ctc_blank(dictionary):
    """The blank symbol's id: ``<mask>`` where the vocabulary has one (PLM vocabularies),
    else ``<s>``, which never occurs in fairseq targets (from-scratch baselines)."""
    mask = getattr(dictionary, "mask_index", None)
    return dictionary.bos() if mask is None else mask


def ctc_loss(log_probs, input_mask, targets, target_mask, blank, reduction="sum"):
    """CTC negative log-likelihood of right-padded targets under right-padded frame scores.

    log_probs: [B, T, V] log-softmax outputs; input_mask: [B, T] True on real frames;
    targets: [B, U] token ids; target_mask: [B, U] True on real tokens. Infeasible pairs
    (more target tokens + forced blanks than frames) give 0 instead of inf
    (``zero_infinity``). Returns the per-sentence losses [B] (``reduction="none"``) or
    their sum.
    """
    input_lengths = input_mask.long().sum(dim=1)
    target_lengths = target_mask.long().sum(dim=1)
    flat_targets = targets.masked_select(target_mask)
    losses = F.ctc_loss(
        log_probs.float().transpose(0, 1), flat_targets, input_lengths, target_lengths,
        blank=blank, reduction="none", zero_infinity=True,
    )
    return losses.sum() if reduction == "sum" else losses


def ctc_collapse_in_place(tokens, blank, pad, canvas_mask=None, scores=None):
    """CTC's many-to-one map B (merge repeats, then drop blanks), applied in place: a
    position survives iff it is not blank, not padding, and differs from its left
    neighbour; every other position becomes ``pad``. The non-pad tokens of a row, in order,
    are the collapsed output, and the row keeps its length (the canvas a CTC denoiser reads
    next). ``canvas_mask`` marks real canvas positions. Returns (tokens, keep[, scores])."""
    prev = torch.cat([tokens.new_full((tokens.size(0), 1), -1), tokens[:, :-1]], dim=1)
    keep = tokens.ne(blank) & tokens.ne(pad) & tokens.ne(prev)
    if canvas_mask is not None:
        keep = keep & canvas_mask
    out = tokens.masked_fill(~keep, pad)
    if scores is None:
        return out, keep
    return out, keep, scores.masked_fill(~keep, 0.0)


def pack_right(tokens, keep, pad):
    """Move the kept tokens of each row to its front (order preserved), pad the rest:
    the collapsed sequences as an ordinary right-padded batch. Returns (packed, lengths)."""
    lengths = keep.long().sum(dim=1)
    width = max(int(lengths.max()) if lengths.numel() else 0, 1)
    # stable sort: kept positions first, in their original order
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    packed = tokens.gather(1, order)[:, :width]
    valid = torch.arange(width, device=tokens.device)[None] < lengths[:, None]
    return packed.masked_fill(~valid, pad), lengths


def ctc_collapse(tokens, blank, pad, canvas_mask=None):
    """B(tokens) as a right-padded batch: (collapsed [B, max_len], lengths [B])."""
    out, keep = ctc_collapse_in_place(tokens, blank, pad, canvas_mask)
    return pack_right(out, keep, pad)

"""Canvases, noise and Mask-Predict schedules for iterative non-autoregressive refinement.
All batched over right-padded [B, T] tensors."""

import torch


def lengths_to_mask(lengths, width=None):
    """[B] lengths -> [B, width] bool, True on the first ``lengths[i]`` positions."""
    width = int(lengths.max()) if width is None else width
    return torch.arange(width, device=lengths.device)[None] < lengths[:, None]


def deletion_repetition_noise(tokens, canvas_mask, blank, max_prob, generator=None):
    """SGA §4.4: T~_0 = T_0 + eps, random deletion or repetition.

    Every sentence draws its noise level p ~ U(0, max_prob); each decided (non-blank)
    canvas position is then, with probability p, *deleted* (it becomes the blank) or
    *repeated* (its token overwrites the next canvas position), with equal chance. The
    canvas keeps its length, so the CTC denoiser's input stays as long as its alignment."""
    b, t = tokens.shape
    p = torch.rand(b, 1, device=tokens.device, generator=generator) * max_prob
    r = torch.rand(b, t, device=tokens.device, generator=generator)
    decided = canvas_mask & tokens.ne(blank)
    delete = decided & (r < p / 2)
    repeat = decided & (r >= p / 2) & (r < p)
    out = tokens.masked_fill(delete, blank)
    into = torch.zeros_like(repeat)
    into[:, 1:] = repeat[:, :-1] & canvas_mask[:, 1:]
    shifted = torch.cat([tokens[:, :1], tokens[:, :-1]], dim=1)
    return torch.where(into, shifted, out)


def random_target_mask(target_mask, generator=None):
    """Mask-Predict training (Ghazvininejad et al. 2019): per sentence of length L draw
    n ~ U{1..L} and choose n of its positions uniformly. Returns [B, T] bool (True = masked)."""
    lengths = target_mask.long().sum(dim=1)
    scores = torch.rand(target_mask.shape, device=target_mask.device, generator=generator)
    scores = scores.masked_fill(~target_mask, 2.0)  # padding sorts last
    u = torch.rand(lengths.shape, device=target_mask.device, generator=generator)
    n = (u * lengths.float()).long() + 1
    n = torch.minimum(n, lengths)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    return (ranks < n[:, None]) & target_mask


def lowest_scores_mask(scores, canvas_mask, n):
    """True on the ``n[i]`` lowest-scoring canvas positions of each row (Mask-Predict's
    re-masking of its least confident tokens)."""
    s = scores.masked_fill(~canvas_mask, float("inf"))
    ranks = s.argsort(dim=1).argsort(dim=1)
    return (ranks < n[:, None]) & canvas_mask


def mask_predict_count(lengths, iteration, iterations):
    """How many tokens Mask-Predict re-masks after iteration ``iteration`` (0-based) of
    ``iterations``: n = L * (T - t) / T with t = iteration + 1 (linear decay to 0)."""
    return (lengths.float() * (iterations - iteration - 1) / iterations).long()


def upsample_by_duplication(tokens, canvas_mask, factor=2):
    """SGA §4.4 (free generation): duplicate every token ``factor`` times before the CTC
    denoiser. Right padding stays right padding."""
    return tokens.repeat_interleave(factor, dim=1), canvas_mask.repeat_interleave(factor, dim=1)

"""CTC loss and collapse against torch's ctc_loss and naive references; refinement helpers."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from fairseq_plm.nat.ctc import ctc_collapse, ctc_collapse_in_place, ctc_loss
from fairseq_plm.nat.refinement import (deletion_repetition_noise, lowest_scores_mask, mask_predict_count,
                                        random_target_mask, upsample_by_duplication)

BLANK, PAD = 0, 9


def naive_collapse(seq, blank=BLANK):
    out, prev = [], None
    for s in seq:
        if s != prev and s != blank:
            out.append(s)
        prev = s
    return out


def naive_ctc_nll(lprobs, target):
    """-log sum over every frame labelling that collapses to ``target`` (enumeration)."""
    t, v = lprobs.shape
    total = -math.inf
    for path in itertools.product(range(v), repeat=t):
        if naive_collapse(path) == list(target):
            total = torch.logaddexp(torch.tensor(total), sum(lprobs[i, s] for i, s in enumerate(path))).item()
    return -total


def padded_batch(seed=0, v=4):
    g = torch.Generator().manual_seed(seed)
    frames = [5, 3, 4]
    targets = [[1, 2, 2], [3], [2, 1]]
    lp = F.log_softmax(torch.randn(3, 5, v, generator=g, dtype=torch.double), -1)
    input_mask = torch.arange(5)[None] < torch.tensor(frames)[:, None]
    tgt = torch.full((3, 3), PAD)
    for i, y in enumerate(targets):
        tgt[i, :len(y)] = torch.tensor(y)
    return lp, input_mask, tgt, tgt.ne(PAD), frames, targets


def test_ctc_loss_matches_enumeration_of_alignments():
    lp, input_mask, tgt, tmask, frames, targets = padded_batch()
    ours = ctc_loss(lp, input_mask, tgt, tmask, blank=BLANK, reduction="none")
    for i in range(3):
        assert ours[i].item() == pytest.approx(naive_ctc_nll(lp[i, :frames[i]], targets[i]), rel=1e-6)


def test_ctc_loss_on_a_padded_batch_equals_torch_per_sentence():
    lp, input_mask, tgt, tmask, frames, targets = padded_batch(seed=1)
    lp = lp.clone().requires_grad_()
    ours = ctc_loss(lp, input_mask, tgt, tmask, blank=BLANK)
    ref = sum(F.ctc_loss(lp[i, :frames[i], None], torch.tensor([targets[i]]), torch.tensor([frames[i]]),
                         torch.tensor([len(targets[i])]), blank=BLANK, reduction="sum") for i in range(3))
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)  # ours computes in float32
    g = torch.autograd.grad(ours, lp)[0]
    assert g[~input_mask].abs().max() == 0  # padded frames get no gradient


def test_infeasible_pair_contributes_zero_not_inf():
    lp = F.log_softmax(torch.randn(1, 2, 4), -1)
    loss = ctc_loss(lp, torch.ones(1, 2, dtype=torch.bool), torch.tensor([[1, 1]]), torch.ones(1, 2, dtype=torch.bool),
                    blank=BLANK)  # "1 1" needs a blank between: 3 frames
    assert loss.item() == 0.0


def test_batched_collapse_matches_naive_collapse():
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 4, (64, 12), generator=g)
    lengths = torch.randint(0, 13, (64,), generator=g)
    canvas = torch.arange(12)[None] < lengths[:, None]
    tokens = tokens.masked_fill(~canvas, PAD)
    packed, n = ctc_collapse(tokens, BLANK, PAD, canvas)
    in_place, keep = ctc_collapse_in_place(tokens, BLANK, PAD, canvas)
    for i in range(64):
        want = naive_collapse(tokens[i, :lengths[i]].tolist())
        assert packed[i, :n[i]].tolist() == want and (packed[i, n[i]:] == PAD).all()
        assert in_place[i][in_place[i].ne(PAD)].tolist() == want  # the generator's view: non-pad tokens
    assert in_place.shape == tokens.shape


def test_noise_deletes_or_repeats_inside_the_canvas_only():
    tokens = torch.arange(1, 9).repeat(200, 1)  # distinct tokens 1..8
    canvas = torch.arange(8)[None] < torch.full((200, 1), 6)
    g = torch.Generator().manual_seed(0)
    noisy = deletion_repetition_noise(tokens, canvas, BLANK, max_prob=0.6, generator=g)
    assert torch.equal(noisy[:, 6:], tokens[:, 6:])  # outside the canvas: untouched
    changed = noisy.ne(tokens) & canvas
    assert changed.any()
    deleted = noisy.eq(BLANK)
    repeated = changed & ~deleted
    # a repetition copies the left neighbour's token
    assert torch.equal(noisy[:, 1:][repeated[:, 1:]], tokens[:, :-1][repeated[:, 1:]])
    assert deleted.any() and repeated.any()
    assert torch.equal(deletion_repetition_noise(tokens, canvas, BLANK, max_prob=0.0), tokens)


def test_mask_predict_helpers():
    target_mask = torch.arange(10)[None] < torch.tensor([[10], [3], [1]])
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        m = random_target_mask(target_mask, generator=g)
        n = m.sum(1)
        assert (n >= 1).all() and (n <= target_mask.sum(1)).all() and not (m & ~target_mask).any()
    scores = torch.tensor([[0.5, 0.1, 0.9, 0.2]])
    assert lowest_scores_mask(scores, torch.ones(1, 4, dtype=torch.bool), torch.tensor([2])).tolist() == \
        [[False, True, False, True]]
    assert mask_predict_count(torch.tensor([8]), 0, 4).item() == 6 and mask_predict_count(torch.tensor([8]), 3, 4) == 0
    up, m = upsample_by_duplication(torch.tensor([[5, 6, PAD]]), torch.tensor([[True, True, False]]))
    assert up.tolist() == [[5, 5, 6, 6, PAD, PAD]] and m.tolist() == [[True] * 4 + [False] * 2]


def test_fairseq_bleu_scorer_survives_an_empty_hypothesis():
    """A NAT output can be empty (all blanks); fairseq's C scorer used to segfault on it."""
    from fairseq.scoring.bleu import BleuConfig, Scorer

    import fairseq_plm  # noqa: F401  (applies compat)

    s = Scorer(BleuConfig(pad=1, eos=2, unk=3))
    s.add(torch.IntTensor([5, 6, 7, 2]), torch.IntTensor([]))
    empty = (s.stat.reflen, s.stat.predlen, s.stat.match1)
    t = Scorer(BleuConfig(pad=1, eos=2, unk=3))
    t.add(torch.IntTensor([5, 6, 7, 2]), torch.IntTensor([2]))  # an autoregressive empty translation
    assert empty == (t.stat.reflen, t.stat.predlen, t.stat.match1)

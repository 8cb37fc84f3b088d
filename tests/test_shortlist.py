"""Output shortlists (plm/shortlist.py): on targets inside the shortlist, losses and decisions
equal scoring the full vocabulary with every other piece masked to -inf; built from the training
targets or a file; stored in (and restored from) checkpoints; through the CLIs."""

import os
import re

import pytest
import torch
import torch.nn.functional as F
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
from fairseq.iterative_refinement_generator import IterativeRefinementGenerator
from fairseq.sequence_generator import SequenceGenerator

from fairseq_plm.criterions.plm_nat_loss import PLMNATLoss
from fairseq_plm.models.msp import MSPConfig, MSPModel
from fairseq_plm.nat.ctc import ctc_loss
from fairseq_plm.plm.errors import FairseqPLMError
from fairseq_plm.plm.shortlist import build_output_shortlist, ids_in_binarized, shortlist_from_ids
from fairseq_plm.plm.vocab import load_dictionary
from test_sga import MASK, SRC, TGT, _Task, batch, tiny_sga
from tiny import cli, translation_task


@pytest.fixture(scope="module")
def task(tiny):
    return translation_task(tiny["data"])


def restricted(logits, ids):
    """The reference: the full vocabulary's scores with every piece outside ``ids`` at -inf."""
    keep = torch.zeros(logits.size(-1), dtype=torch.bool)
    keep[ids] = True
    return logits.masked_fill(~keep, float("-inf"))


def msp_pair(tiny, task, ids):
    """The same MSP model twice: with the shortlist, and scoring the full vocabulary. Each has
    its own PLM instance (not the process-wide shared one), so that a test may patch one."""
    from fairseq_plm.plm.shared import sharing

    torch.manual_seed(0)
    with sharing(False):
        full = MSPModel.build_model(MSPConfig(plm=tiny["plm"], prompt_length=4), task).eval()
    with torch.no_grad():
        for p in full.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    torch.manual_seed(0)
    with sharing(False):
        short = MSPModel.build_model(MSPConfig(plm=tiny["plm"], prompt_length=4), task).eval()
    short.load_state_dict(full.state_dict())
    short.decoder.output_shortlist = shortlist_from_ids(ids, task.tgt_dict)
    return full, short


def test_msp_training_loss_equals_the_restricted_full_vocabulary(tiny, task):
    ds = task.dataset("test")
    sample = ds.collater([ds[i] for i in range(6)])
    ids = torch.unique(torch.cat([sample["target"].flatten(), torch.arange(40, 90)]))
    full, short = msp_pair(tiny, task, ids)
    net = sample["net_input"]
    with torch.no_grad():
        out = short(**net)
        lp = short.get_normalized_probs(out, log_probs=True)
        target = short.get_targets(sample, out)
        ref_logits = full(**net)[0]
    sl = short.decoder.output_shortlist
    assert lp.size(-1) == len(sl) < len(task.tgt_dict)
    assert torch.equal(sl.to_ids(target), sample["target"])          # targets map back exactly
    assert int(target.eq(task.tgt_dict.pad()).sum()) == int(sample["target"].eq(task.tgt_dict.pad()).sum())
    # nll: the restricted full vocabulary, read at the original ids
    ref_lp = F.log_softmax(restricted(ref_logits.float(), sl.ids), dim=-1)
    nll = -lp.gather(-1, target[..., None])[..., 0]
    ref_nll = -ref_lp.gather(-1, sample["target"][..., None])[..., 0]
    keep = sample["target"].ne(task.tgt_dict.pad())
    torch.testing.assert_close(nll[keep], ref_nll[keep], atol=1e-5, rtol=1e-5)
    # label smoothing spreads over the shortlist: the finite entries of the restricted reference
    loss, _ = label_smoothed_nll_loss(lp.view(-1, lp.size(-1)), target.view(-1, 1), 0.1,
                                      ignore_index=task.tgt_dict.pad())
    ref, _ = label_smoothed_nll_loss(ref_lp[..., sl.ids].reshape(-1, len(sl)), target.view(-1, 1), 0.1,
                                     ignore_index=task.tgt_dict.pad())
    torch.testing.assert_close(loss, ref, atol=1e-4, rtol=1e-5)
    # and it is not the unrestricted loss
    unrestricted = F.log_softmax(ref_logits.float(), -1).gather(-1, sample["target"][..., None])[..., 0]
    assert not torch.allclose(nll[keep], -unrestricted[keep], atol=1e-3)


def test_msp_beam_search_equals_the_restricted_full_vocabulary(tiny, task):
    ds = task.dataset("test")
    sample = ds.collater([ds[i] for i in range(5)])
    ids = torch.arange(0, 120)
    full, short = msp_pair(tiny, task, ids)
    ref_logits = full.plm.logits
    full.plm.logits = lambda h, shortlist=None: restricted(ref_logits(h), ids)  # the reference
    try:
        outs = []
        for model in (short, full):
            gen = SequenceGenerator([model], task.tgt_dict, beam_size=4, max_len_a=0, max_len_b=8, min_len=2)
            with torch.no_grad():
                outs.append(gen.generate([model], sample))
    finally:
        del full.plm.logits
    for a, b in zip(*outs):
        for ha, hb in zip(a, b):
            assert torch.equal(ha["tokens"], hb["tokens"])
            torch.testing.assert_close(ha["positional_scores"], hb["positional_scores"], atol=1e-5, rtol=1e-5)
            assert bool((ha["tokens"] < 120).all())
    # the reference scorer (--score-reference) reads full-vocabulary probabilities
    with torch.no_grad():
        net = sample["net_input"]
        lp = short.get_normalized_probs(short(**net), log_probs=True, sample=sample)
    assert lp.size(-1) == len(task.tgt_dict) and torch.isinf(lp[..., 200]).all()


@pytest.mark.parametrize("alignment", ["ctc", "mask_predict"])
def test_sga_losses_and_decoding_equal_the_restricted_full_vocabulary(alignment):
    model, d = tiny_sga(alignment=alignment)
    ids = torch.tensor([t for row in TGT for t in row] + list(range(26, 33)))
    short, _ = tiny_sga(alignment=alignment)
    short.output_shortlist = shortlist_from_ids(ids, d, extra_specials=[MASK])
    sl = short.output_shortlist
    assert len(sl) < len(d) and MASK in sl.ids.tolist()
    ref_logits = model.plm.logits
    model.plm.logits = lambda h, shortlist=None: restricted(ref_logits(h), sl.ids)
    src, src_len = batch(SRC)
    tgt, _ = batch(TGT)
    crit = PLMNATLoss(_Task(d))
    sample = {"net_input": {"src_tokens": src, "src_lengths": src_len}, "target": tgt}
    try:
        torch.manual_seed(5)
        loss_ref, _, log_ref = crit(model, sample)
        torch.manual_seed(5)
        loss, _, log = crit(short, sample)
        torch.testing.assert_close(loss, loss_ref, atol=1e-4, rtol=1e-5)
        for k in log_ref:
            if k.endswith("-loss"):
                assert abs(log[k] - log_ref[k]) < 1e-4, k
        gens = [IterativeRefinementGenerator(d, models=[m], max_iter=2, adaptive=False) for m in (short, model)]
        s = {"net_input": {"src_tokens": src, "src_lengths": src_len}, "id": torch.arange(3)}
        with torch.no_grad():
            a, b = (g.generate([m], s) for g, m in zip(gens, (short, model)))
    finally:
        del model.plm.logits
    for ha, hb in zip(a, b):
        assert torch.equal(ha[0]["tokens"], hb[0]["tokens"])
        assert set(ha[0]["tokens"].tolist()) <= set(sl.ids.tolist())
    # the CTC term is scored over the shortlist, with the blank at its shortlist position
    terms = short(src, src_len, tgt_tokens=tgt)
    name = "align-ctc" if alignment == "ctc" else "denoise-ctc"
    assert terms[name]["lprobs"].size(-1) == len(sl) and terms[name]["blank"] == sl.position_of(MASK)


def test_ctc_on_a_shortlist_equals_ctc_on_the_restricted_vocabulary():
    torch.manual_seed(0)
    v, ids = 30, torch.tensor([0, 1, 2, 3, 7, 8, 9, 12, 29])
    logits = torch.randn(2, 8, v)
    targets, mask = torch.tensor([[7, 9, 12], [8, 8, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]]).bool()
    frames = torch.ones(2, 8, dtype=torch.bool)
    ref = ctc_loss(F.log_softmax(restricted(logits, ids), -1), frames, targets, mask, blank=29, reduction="none")
    pos = torch.full((v,), -1).index_copy_(0, ids, torch.arange(len(ids)))
    ours = ctc_loss(F.log_softmax(logits[..., ids], -1), frames, pos[targets], mask, blank=int(pos[29]),
                    reduction="none")
    torch.testing.assert_close(ours, ref)


def test_auto_shortlist_is_the_training_targets_plus_specials(tiny, task, tmp_path):
    sl = build_output_shortlist("auto", task.tgt_dict, tiny["data"], "en", "de")
    seen = ids_in_binarized(os.path.join(tiny["data"], "train.en-de.de"), len(task.tgt_dict))
    assert set(sl.ids.tolist()) == seen | {0, 1, 2}
    assert sl.ids.tolist() == sorted(sl.ids.tolist()) and len(sl) < len(task.tgt_dict)
    # a file of pieces (fairseq dict.txt style lines work too)
    f = tmp_path / "pieces.txt"
    f.write_text("# comment\n" + "\n".join(f"{task.tgt_dict[i]} 1" for i in (10, 11, 50)) + "\n")
    assert build_output_shortlist(str(f), task.tgt_dict).ids.tolist() == [0, 1, 2, 10, 11, 50]
    f.write_text(f"{task.tgt_dict[10]}\nnot-a-piece-xyz\n")
    with pytest.raises(FairseqPLMError, match=r"pieces.txt, line 2: 'not-a-piece-xyz'"):
        build_output_shortlist(str(f), task.tgt_dict)
    with pytest.raises(FairseqPLMError, match="expected none, auto or a file"):
        build_output_shortlist("autoo", task.tgt_dict)
    # no training split: empty until a checkpoint fills it; using it unfilled is a clear error
    empty = build_output_shortlist("auto", task.tgt_dict, str(tmp_path), "en", "de")
    with pytest.raises(FairseqPLMError, match="no pieces"):
        empty.rows(torch.zeros(len(task.tgt_dict), 4))
    empty.load_state_dict({"ids": sl.ids})
    assert torch.equal(empty.ids, sl.ids)


def test_msp_sga_and_ctc_nat_train_and_decode_with_a_shortlist_through_the_clis(tiny, tiny_xlmr, tmp_path):
    from fairseq_plm.checkpoints import load_torch_file

    runs = [("msp", tiny, ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"],
             ["--beam", "2", "--max-len-a", "0", "--max-len-b", "6"], "decoder.output_shortlist.ids"),
            ("sga", tiny_xlmr, ["--criterion", "plm_nat_loss"], ["--iter-decode-max-iter", "1"],
             "output_shortlist.ids"),
            ("ctc_nat", tiny_xlmr, ["--criterion", "plm_nat_loss", "--share-all-embeddings"] + [
                x for k, v in (("layers", "1"), ("embed-dim", "32"), ("ffn-embed-dim", "64"), ("attention-heads", "4"))
                for side in ("encoder", "decoder") for x in (f"--{side}-{k}", v)], [], "decoder.output_shortlist.ids")]
    for arch, setup, crit, gen, key in runs:
        save = tmp_path / arch
        plm = [] if arch == "ctc_nat" else ["--plm", setup["plm"], "--prompt-length", "4"]
        cli("fairseq-plm-train", setup["data"], *plm, "--task", "plm_translation", "--arch", arch,
            "--optimizer", "adam", "--lr", "0.01", "--max-tokens", "1000", "--max-update", "2",
            *crit, "--cpu", "--save-dir", save, "--no-epoch-checkpoints", "--output-shortlist", "auto")
        state = load_torch_file(str(save / "checkpoint_last.pt"))
        ids = state["model"][key]
        assert 10 < len(ids) < 300
        # decoding on a data directory without the training split: the checkpoint's shortlist
        test_only = tmp_path / f"{arch}-test-only"
        test_only.mkdir()
        for f in os.listdir(setup["data"]):
            if not f.startswith("train"):
                os.symlink(os.path.join(setup["data"], f), test_only / f)
        out = cli("fairseq-plm-generate", test_only, "--path", save / "checkpoint_last.pt", "--task", "plm_translation",
                  "--cpu", "--batch-size", "6", *gen).stdout
        hyps = re.findall(r"^H-(\d+)\t\S+\t(.*)$", out, flags=re.M)
        assert sorted(int(i) for i, _ in hyps) == list(range(13))
        d = load_dictionary(os.path.join(setup["data"], "dict.de.txt"))
        allowed = {d[i] for i in ids.tolist()}
        assert all(p in allowed for _, h in hyps for p in h.split()), arch

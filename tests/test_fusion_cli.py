"""Deep fusion end to end: fairseq-train --user-dir, fairseq-generate (beam search for the AT
model, iterative refinement for Mask-Predict), and an exactly resumable run."""

import os

import pytest

import torch

from tiny import USER_DIR, cli, table_rows

TRAIN = ["--user-dir", USER_DIR, "--task", "fusion_translation", "--criterion", "deep_fusion_loss",
         "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64", "--decoder-attention-heads", "4",
         "--optimizer", "adam", "--lr", "0.001", "--max-tokens", "400", "--cpu", "--no-progress-bar",
         "--log-format", "simple", "--log-interval", "1", "--seed", "2"]


def generate(setup, save, *extra):
    out = cli("fairseq-generate", setup["data"], "--user-dir", USER_DIR, "--task", "fusion_translation",
              "--path", os.path.join(save, "checkpoint_last.pt"), "--cpu", "--max-tokens", "400",
              "--remove-bpe", "sentencepiece", *extra).stdout
    return [line for line in out.splitlines() if line.startswith("H-")], out


def test_at_trains_all_four_tasks_and_translates(tiny_fusion, tmp_path):
    save = str(tmp_path / "at")
    p = cli("fairseq-train", tiny_fusion["data"], *TRAIN, "--arch", "deep_fusion", "--plm", tiny_fusion["plm"],
            "--max-epoch", "2", "--save-dir", save)
    log = p.stdout + p.stderr
    last = [line for line in log.splitlines() if "| train |" in line][-1]
    for term in ("translation-loss", "twp-loss", "tsp-loss", "mlm-loss"):
        assert term in last
    valid = [line for line in log.splitlines() if "| valid |" in line][-1]
    assert "translation-loss" in valid and "twp-loss" not in valid  # validation: translation only
    hyps, out = generate(tiny_fusion, save, "--beam", "4")
    assert len(hyps) == 13 and "BLEU4" in out
    assert "[PAD]" not in out


def test_nat_mask_predict_decodes_with_iterative_refinement(tiny_fusion, tmp_path):
    save = str(tmp_path / "nat")
    cli("fairseq-train", tiny_fusion["data"], *TRAIN, "--arch", "deep_fusion_cmlm", "--plm", tiny_fusion["plm"],
        "--max-epoch", "1", "--save-dir", save, "--no-tsp")
    hyps, out = generate(tiny_fusion, save, "--iter-decode-max-iter", "4", "--iter-decode-with-beam", "2")
    assert len(hyps) == 13 and "<s>" not in out


def test_resumed_run_continues_exactly(tiny_fusion, tmp_path):
    """The random parts of the objective (MLM masks, TSP negatives and candidates) are drawn
    from torch's generator, which fairseq reseeds every update: resuming changes nothing."""
    args = [tiny_fusion["data"], *TRAIN, "--arch", "deep_fusion", "--plm", tiny_fusion["plm"], "--fusion-layers", "4",
            "--no-epoch-checkpoints", "--dropout", "0"]
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    cli("fairseq-train", *args, "--save-dir", straight, "--max-epoch", "2")
    cli("fairseq-train", *args, "--save-dir", split, "--max-epoch", "1")
    cli("fairseq-train", *args, "--save-dir", split, "--max-epoch", "2")
    a = torch.load(os.path.join(straight, "checkpoint_last.pt"), weights_only=False)["model"]
    b = torch.load(os.path.join(split, "checkpoint_last.pt"), weights_only=False)["model"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)


# ------------------------------------------------------------------ recipes: fusion_compare, fusion_distill

@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """fusion_compare on tiny data: the AT/NAT pair and fairseq's Mask-Predict, NAT systems on
    the fusion model's distilled training set."""
    from tiny import make_corpus, make_tiny_mbert, make_wordpiece_vocab

    root = tmp_path_factory.mktemp("fusion_compare")
    raw, ptm = root / "raw", root / "ptm"
    make_corpus(str(raw), n_train=60, n_valid=8, n_test=10)
    make_tiny_mbert(str(ptm), make_wordpiece_vocab([raw / "train.en", raw / "train.de"], root / "vocab.txt"))
    args = ["python", "-m", "fairseq_plm.recipes.fusion_compare", "--raw", raw, "--plm", ptm, "--out", root / "out",
            "--systems", "fusion,fusion_nat,cmlm", "--nat-distill", "--max-update", "2", "--max-tokens", "1000",
            "--nmt-vocab", "120", "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64",
            "--decoder-attention-heads", "4", "--baseline-encoder-layers", "1", "--batch-size", "4",
            "--nat-iterations", "2", "--nat-length-beam", "2", "--speed-runs", "0", "--cpu"]
    return {"root": root, "raw": raw, "ptm": ptm, "args": args, "out": cli(*args).stdout}


def test_fusion_compare_table_and_resume(compared):
    rows = table_rows(compared["out"])
    assert [r[1] for r in rows] == ["fusion", "fusion_nat", "cmlm"]
    for label, system, params, trained, updates, minutes, valid, bleu, bs1, rel, batched in rows:
        assert int(trained.replace(",", "")) > 0 and int(updates) == 2 and float(minutes) >= 0
        assert 0.0 <= float(bleu) <= 100.0 and bs1 == "n/a" and float(batched) > 0
    assert "(distilled data)" in rows[1][0] and "(distilled data)" in rows[2][0] and "distilled" not in rows[0][0]
    assert "BLEU: sacrebleu nrefs:1|case:mixed" in compared["out"]
    out = compared["root"] / "out"
    # NAT systems trained on the teacher's translations: same sources, other targets
    assert (out / "fusion" / "distilled-train.pieces").read_text().splitlines() != \
        (out / "tok" / "train.de").read_text().splitlines()
    for name in ("data-fusion-distilled", "data-baseline-distilled"):
        assert (out / name / "train.en-de.en.bin").read_bytes() == \
            (out / name.replace("-distilled", "") / "train.en-de.en.bin").read_bytes()
        assert (out / name / "train.en-de.de.bin").read_bytes() != \
            (out / name.replace("-distilled", "") / "train.en-de.de.bin").read_bytes()
    logs = {s: (out / s / "train.log").read_text() for s in ("fusion", "fusion_nat", "cmlm")}
    again = cli(*compared["args"]).stdout  # a rerun trains and decodes nothing
    assert table_rows(again) == rows and "translate the test set" not in again
    assert all((out / s / "train.log").read_text() == log for s, log in logs.items())


def test_fusion_distill_recipe_builds_the_same_distilled_set_and_trains(compared, tmp_path):
    out = compared["root"] / "out"
    p = cli("python", "-m", "fairseq_plm.recipes.fusion_distill", "--data", out / "data-fusion", "--teacher",
            out / "fusion" / "checkpoint_best.pt", "--out", tmp_path / "distilled", "--beam", "4", "--batch-size", "4",
            "--cpu",
            "--train", "--plm", compared["ptm"], "--save-dir", tmp_path / "nat", "--max-update", "1",
            "--train-extra", "--decoder-embed-dim 32 --decoder-ffn-embed-dim 64 --decoder-attention-heads 4 "
                             "--no-progress-bar")
    assert (tmp_path / "distilled" / "train.en-de.de.bin").read_bytes() == \
        (out / "data-fusion-distilled" / "train.en-de.de.bin").read_bytes()  # the same teacher decoding
    assert (tmp_path / "nat" / "checkpoint_last.pt").exists() and "deep_fusion_cmlm trained" in p.stdout


def test_fusion_compare_help_and_system_list(compared, capsys):
    from fairseq_plm.recipes import fusion_compare

    with pytest.raises(SystemExit):
        fusion_compare.parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("--plm", "--raw", "--minutes", "--max-update", "--systems", "--m-values", "--nat-distill"):
        assert flag in text
    args = fusion_compare.parse_args(["--plm", str(compared["ptm"]), "--out", "x", "--minutes", "1",
                                      "--m-values", "1,2,3,4"])
    # the full table by default; M = 3 does not divide the tiny PTM's 4 layers
    assert args.systems == ["fusion", "fusion_nat", "baseline", "cmlm", "ptm_init", "ptm_frozen", "no_twp", "no_tsp",
                            "no_mlm", "all_tasks", "m1", "m4"]
    assert args.m_skipped == [3]

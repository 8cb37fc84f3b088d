"""Deep fusion end to end: fairseq-train --user-dir, fairseq-generate (beam search for the AT
model, iterative refinement for Mask-Predict), and an exactly resumable run."""

import os

import torch

from tiny import USER_DIR, cli

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

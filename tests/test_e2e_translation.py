"""End to end through the real CLIs: fairseq-preprocess -> fairseq-train -> fairseq-generate."""

import os
import re
import shutil

import pytest
import torch

from conftest import TRAIN_ARGS
from fairseq_plm.checkpoints import load_torch_file
from tiny import USER_DIR, cli

GEN = ["--task", "plm_translation", "--beam", "2", "--max-len-a", "0", "--max-len-b", "8", "--cpu"]


def load(path):
    return load_torch_file(path)  # weights-only, as every checkpoint of the package is read


def hypothesis_ids(output):
    return sorted(int(m) for m in re.findall(r"^H-(\d+)\t", output, flags=re.M))


def test_checkpoints_hold_only_the_prompt(trained):
    state = load(os.path.join(trained["save"], "checkpoint_last.pt"))
    keys = set(state["model"])
    assert keys == {"encoder.prompts.0.phi", "encoder.prompts.0.alpha", "plm_fingerprint"}
    assert state["cfg"]["model"]["plm"] == os.path.abspath(trained["plm"])
    # the prompt trained: it moved away from the first epoch's values
    first = load(os.path.join(trained["save"], "checkpoint1.pt"))["model"]["encoder.prompts.0.phi"]
    assert not torch.equal(first, state["model"]["encoder.prompts.0.phi"])


@pytest.mark.parametrize("batching", [["--batch-size", "4"], ["--max-tokens", "60"], ["--batch-size", "1"]])
def test_generate_translates_every_sentence(trained, batching):
    # 13 test sentences: not a multiple of 8
    out = cli("fairseq-generate", trained["data"], "--user-dir", USER_DIR, "--path",
              os.path.join(trained["save"], "checkpoint_last.pt"), *GEN, *batching).stdout
    assert hypothesis_ids(out) == list(range(13))


def test_validate_scores_every_sentence(trained):
    from fairseq_plm.tasks.plm_translation import PLMTranslationConfig, PLMTranslationTask

    cfg = PLMTranslationConfig(data=trained["data"], source_lang="en", target_lang="de", dataset_impl=None,
                               train_subset="train", required_seq_len_multiple=1, seed=1)
    task = PLMTranslationTask.setup_task(cfg)
    task.load_dataset("valid")
    itr = task.get_batch_iterator(task.dataset("valid"), max_sentences=4, required_batch_size_multiple=8)
    ids = sorted(i for batch in itr.next_epoch_itr(shuffle=False) for i in batch["id"].tolist())
    assert ids == list(range(13))
    p = cli("fairseq-plm-validate", trained["data"], "--path", os.path.join(trained["save"], "checkpoint_last.pt"),
            "--task", "plm_translation", "--cpu", "--batch-size", "4", "--valid-subset", "valid,test")
    assert "valid on 'valid' subset" in p.stdout + p.stderr


def test_generate_with_sentencepiece_detokenizes_and_scores_with_sacrebleu(trained):
    out = cli("fairseq-plm-generate", trained["data"], "--path", os.path.join(trained["save"], "checkpoint_last.pt"),
              *GEN, "--batch-size", "5", "--bpe", "sentencepiece", "--sentencepiece-model",
              os.path.join(trained["plm"], "spiece.model"), "--scoring", "sacrebleu").stdout
    refs = [l for l in out.splitlines() if l.startswith("T-")]
    assert len(refs) == 13 and all("\u2581" not in l for l in refs)
    assert "BLEU" in out


def test_interactive(trained):
    import subprocess
    import sys

    exe = os.path.join(os.path.dirname(sys.executable), "fairseq-plm-interactive")
    p = subprocess.run([exe, trained["data"], "--path", os.path.join(trained["save"], "checkpoint_last.pt"),
                        *GEN, "--bpe", "sentencepiece", "--sentencepiece-model",
                        os.path.join(trained["plm"], "spiece.model")],
                       input="Open the file\nSave all\n", capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    assert len(re.findall(r"^H-\d+\t", p.stdout, flags=re.M)) == 2


def test_missing_plm_gives_a_clear_error(trained, tmp_path):
    ckpt = os.path.join(trained["save"], "checkpoint_last.pt")
    gone = str(tmp_path / "moved-away")
    p = cli("fairseq-plm-generate", trained["data"], "--path", ckpt, *GEN,
            "--model-overrides", repr({"plm": gone}), check=False)
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert gone in last and "Traceback" not in p.stderr


def test_checkpoint_on_a_different_plm_is_refused(trained, tmp_path):
    from tiny import make_tiny_gpt

    other = str(tmp_path / "other-plm")
    make_tiny_gpt(other, os.path.join(trained["plm"], "spiece.model"), seed=123)
    p = cli("fairseq-plm-generate", trained["data"], "--path", os.path.join(trained["save"], "checkpoint_last.pt"),
            *GEN, "--model-overrides", repr({"plm": other}), check=False)
    assert p.returncode != 0 and "fingerprint" in p.stderr.strip().splitlines()[-1]


def test_average_checkpoints(trained, tmp_path):
    c1, c2 = (os.path.join(trained["save"], f"checkpoint{i}.pt") for i in (1, 2))
    avg = str(tmp_path / "avg.pt")
    cli("fairseq-plm-average-checkpoints", "--inputs", c1, c2, "--output", avg)
    a, b, m = load(c1)["model"], load(c2)["model"], load(avg)["model"]
    assert torch.allclose(m["encoder.prompts.0.phi"], (a["encoder.prompts.0.phi"] + b["encoder.prompts.0.phi"]) / 2)
    assert torch.equal(m["plm_fingerprint"], a["plm_fingerprint"])
    cli("fairseq-plm-average-checkpoints", "--inputs", trained["save"], "--num-epoch-checkpoints", "2",
        "--output", avg)
    out = cli("fairseq-plm-generate", trained["data"], "--path", avg, *GEN, "--batch-size", "8").stdout
    assert hypothesis_ids(out) == list(range(13))


def test_user_dir_from_another_copy_of_the_package(trained, tmp_path):
    """Trained with the source tree's path stored in the checkpoint; generating with another
    copy (e.g. the installed package) must not trip fairseq's module-uniqueness check."""
    copy = tmp_path / "elsewhere" / "fairseq_plm"
    shutil.copytree(USER_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    out = cli("fairseq-generate", trained["data"], "--user-dir", str(copy), "--path",
              os.path.join(trained["save"], "checkpoint_last.pt"), *GEN, "--batch-size", "13").stdout
    assert hypothesis_ids(out) == list(range(13))


def test_resumed_training_continues_exactly(tiny, tmp_path):
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    cli("fairseq-plm-train", tiny["data"], "--plm", tiny["plm"], *TRAIN_ARGS, "--max-epoch", "2",
        "--save-dir", straight)
    cli("fairseq-plm-train", tiny["data"], "--plm", tiny["plm"], *TRAIN_ARGS, "--max-epoch", "1",
        "--save-dir", resumed)
    cli("fairseq-plm-train", tiny["data"], "--plm", tiny["plm"], *TRAIN_ARGS, "--max-epoch", "2",
        "--save-dir", resumed)
    a = load(os.path.join(straight, "checkpoint_last.pt"))
    b = load(os.path.join(resumed, "checkpoint_last.pt"))
    assert a["optimizer_history"][-1]["num_updates"] == b["optimizer_history"][-1]["num_updates"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_training_log_counts_only_the_prompt(tiny, tmp_path):
    p = cli("fairseq-plm-train", tiny["data"], "--plm", tiny["plm"], *TRAIN_ARGS, "--max-update", "1",
            "--save-dir", str(tmp_path / "c"), "--no-save")
    log = p.stdout + p.stderr
    m = re.search(r"num\. (?:shared )?model params: ([\d,]+) \(num\. trained: ([\d,]+)\)", log)
    total, trained_n = (int(x.replace(",", "")) for x in m.groups())
    # 2 layers x (key, value) x 8 prompt vectors x 32 dims + alpha
    assert trained_n == 2 * 2 * 8 * 32 + 1 and total > trained_n


def test_training_batches_keep_the_remainder(trained):
    """fairseq's batch_by_size drops a remainder smaller than --required-batch-size-multiple."""
    from fairseq.data import data_utils
    import numpy as np

    from fairseq_plm.tasks.plm_translation import PLMTranslationConfig, PLMTranslationTask

    assert data_utils.batch_by_size(np.arange(3), lambda i: 4, max_tokens=64, required_batch_size_multiple=8) == []
    cfg = PLMTranslationConfig(data=trained["data"], source_lang="en", target_lang="de", dataset_impl=None,
                               train_subset="train", required_seq_len_multiple=1, seed=1)
    task = PLMTranslationTask.setup_task(cfg)
    task.load_dataset("train")
    ds = task.dataset("train")
    for max_tokens in (300, 1000, 5000):
        itr = task.get_batch_iterator(ds, max_tokens=max_tokens, required_batch_size_multiple=8)
        ids = sorted(i for b in itr.next_epoch_itr(shuffle=True) for i in b["id"].tolist())
        assert ids == list(range(len(ds))), max_tokens

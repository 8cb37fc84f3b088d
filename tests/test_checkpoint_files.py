"""A killed run loses nothing (issue 13 #3) and averaging refuses in one line (issue 13 #7,
--num-epoch-checkpoints with none found): atomic checkpoint copies, resuming from the newest
complete checkpoint, one-line errors of fairseq-plm-average-checkpoints."""

import os
import shutil
import types

import pytest
import torch

from conftest import TRAIN_ARGS
from tiny import cli

from fairseq_plm.checkpoints import load_torch_file, newest_complete_checkpoint
from fairseq_plm.plm.errors import FairseqPLMError


def _kill_midway(src, dst, *args, **kwargs):
    """A copy that the process dies in, after writing half of the file."""
    data = src.read() if hasattr(src, "read") else open(src, "rb").read()
    if hasattr(dst, "write"):
        dst.write(data[: len(data) // 2])
    else:
        with open(dst, "wb") as f:
            f.write(data[: len(data) // 2])
    raise KeyboardInterrupt("killed")


def test_fairseq_copies_checkpoints_atomically(tmp_path, monkeypatch):
    from fairseq import checkpoint_utils

    saved, last = tmp_path / "checkpoint_1_10.pt", tmp_path / "checkpoint_last.pt"
    saved.write_bytes(b"new" * 1000)
    last.write_bytes(b"old" * 1000)
    monkeypatch.setattr(shutil, "copyfile", _kill_midway)
    monkeypatch.setattr(shutil, "copyfileobj", _kill_midway)
    with pytest.raises(KeyboardInterrupt):
        checkpoint_utils.PathManager.copy(str(saved), str(last), overwrite=True)  # what save_checkpoint calls
    assert last.read_bytes() == b"old" * 1000  # the previous checkpoint_last.pt, whole
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_1_10.pt", "checkpoint_last.pt"]
    monkeypatch.undo()
    assert checkpoint_utils.PathManager.copy(str(saved), str(last), overwrite=True)
    assert last.read_bytes() == b"new" * 1000


def _write(path, mtime, truncate=False):
    torch.save({"model": {"w": torch.ones(3)}, "cfg": {}}, path)
    if truncate:
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
    os.utime(path, (mtime, mtime))
    return str(path)


def test_the_newest_complete_checkpoint_is_chosen(tmp_path):
    older = _write(tmp_path / "checkpoint_1_2.pt", 100)
    newer = _write(tmp_path / "checkpoint_1_4.pt", 200)
    last = _write(tmp_path / "checkpoint_last.pt", 201, truncate=True)
    assert newest_complete_checkpoint(str(tmp_path)) == (newer, [last])
    _write(tmp_path / "checkpoint_best.pt", 300, truncate=True)
    _write(tmp_path / "checkpoint_last.pt", 150)  # whole but older than checkpoint_1_4.pt
    path, skipped = newest_complete_checkpoint(str(tmp_path))
    assert path == newer and skipped == [str(tmp_path / "checkpoint_best.pt")]
    for p in (older, newer, last):
        os.truncate(p, 10)
    assert newest_complete_checkpoint(str(tmp_path))[0] is None


def test_resume_with_no_complete_checkpoint_is_one_error(tmp_path):
    from fairseq import checkpoint_utils

    _write(tmp_path / "checkpoint_last.pt", 100, truncate=True)
    cfg = types.SimpleNamespace(restore_file="checkpoint_last.pt", save_dir=str(tmp_path), no_last_checkpoints=False,
                                finetune_from_model=None)
    trainer = types.SimpleNamespace(checkpoint_suffix="")
    with pytest.raises(FairseqPLMError, match="checkpoint_last.pt is incomplete .* holds no complete checkpoint"):
        checkpoint_utils.load_checkpoint(cfg, trainer)


def test_a_kill_between_save_and_copy_resumes_from_the_saved_checkpoint(tmp_path):
    """fairseq saves checkpoint_<e>_<u>.pt, then copies it to checkpoint_last.pt: killed in
    between, checkpoint_last.pt is whole but one save behind (or missing on the first save)."""
    from fairseq_plm.compat import _resume_from_newest_complete

    _write(tmp_path / "checkpoint_last.pt", 100)
    saved = _write(tmp_path / "checkpoint_1_4.pt", 200)
    cfg = types.SimpleNamespace(restore_file="checkpoint_last.pt", save_dir=str(tmp_path), no_last_checkpoints=False,
                                finetune_from_model=None)
    trainer = types.SimpleNamespace(checkpoint_suffix="")
    with _resume_from_newest_complete(cfg, trainer):
        assert cfg.restore_file == saved
    assert cfg.restore_file == "checkpoint_last.pt"  # the saved config is left as given
    os.remove(tmp_path / "checkpoint_last.pt")
    with _resume_from_newest_complete(cfg, trainer):
        assert cfg.restore_file == saved
    cfg.no_last_checkpoints = True  # fairseq never writes one: a missing checkpoint_last.pt means a fresh start
    with _resume_from_newest_complete(cfg, trainer):
        assert cfg.restore_file == "checkpoint_last.pt"


def test_a_truncated_checkpoint_last_resumes_from_the_newest_complete_one(trained, tmp_path):
    """A run killed while fairseq wrote checkpoint_last.pt: the rerun continues from the newest
    complete checkpoint (epoch 2) instead of dying on the corrupt zip or starting over."""
    save = str(tmp_path / "save")
    shutil.copytree(trained["save"], save)  # keeps modification times: checkpoint_best.pt is the newest
    last = os.path.join(save, "checkpoint_last.pt")
    os.truncate(last, os.path.getsize(last) // 2)
    p = cli("fairseq-plm-train", trained["data"], "--plm", trained["plm"], *TRAIN_ARGS, "--max-epoch", "3",
            "--save-dir", save)
    log = p.stdout + p.stderr
    assert f"{last} is incomplete (truncated or corrupt); resuming from {os.path.join(save, 'checkpoint_best.pt')}" \
        in log
    assert "begin training epoch 3" in log and "begin training epoch 1" not in log
    per_epoch = load_torch_file(os.path.join(trained["save"], "checkpoint1.pt"))["optimizer_history"][-1]["num_updates"]
    resumed = load_torch_file(last)["optimizer_history"][-1]["num_updates"]
    assert resumed == 3 * per_epoch


# ------------------------------------------------------------------ fairseq-plm-average-checkpoints

def test_averaging_different_prompt_lengths_names_the_files_and_the_key(trained, tmp_path):
    a = os.path.join(trained["save"], "checkpoint1.pt")
    state = load_torch_file(os.path.join(trained["save"], "checkpoint2.pt"))
    state["model"]["encoder.prompts.0.phi"] = state["model"]["encoder.prompts.0.phi"][:, :, :4].clone()
    b = str(tmp_path / "length4.pt")
    torch.save(state, b)
    p = cli("fairseq-plm-average-checkpoints", "--inputs", a, b, "--output", tmp_path / "avg.pt", check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
    last = p.stderr.strip().splitlines()[-1]
    assert a in last and b in last and "encoder.prompts.0.phi" in last and "--prompt-length" in last, last
    assert not os.path.exists(tmp_path / "avg.pt")


def test_num_epoch_checkpoints_with_none_found_is_one_line(trained, tmp_path):
    save = tmp_path / "no-epochs"  # what --no-epoch-checkpoints leaves (the quickstart's setting)
    save.mkdir()
    for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
        shutil.copy(os.path.join(trained["save"], name), save / name)
    p = cli("fairseq-plm-average-checkpoints", "--inputs", save, "--num-epoch-checkpoints", "2",
            "--output", tmp_path / "avg.pt", check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
    last = p.stderr.strip().splitlines()[-1]
    assert "--num-epoch-checkpoints 2" in last and str(save) in last and "--no-epoch-checkpoints" in last, last

"""Data-parallel training on CPU: 2 gloo processes through fairseq's own launcher and trainer."""

import os
import subprocess
import sys

import torch

from conftest import TRAIN_ARGS
from tiny import USER_DIR


def test_two_process_cpu_training_keeps_replicas_identical(tiny, tmp_path):
    out = tmp_path / "dumps"
    out.mkdir()
    env = dict(os.environ, DDP_DRIVER_OUT=str(out), OMP_NUM_THREADS="1")
    cmd = [sys.executable, os.path.join(os.path.dirname(__file__), "ddp_driver.py"), tiny["data"],
           "--user-dir", USER_DIR, "--plm", tiny["plm"], *TRAIN_ARGS, "--max-update", "5",
           "--distributed-world-size", "2", "--save-dir", str(tmp_path / "ckpt"), "--no-epoch-checkpoints"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    assert "training on 2 devices" in p.stdout + p.stderr
    r0, r1 = (torch.load(out / f"rank{r}.pt") for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["num_updates"] == r1["num_updates"] == 5
    assert r0["params"].keys() == r1["params"].keys() and r0["params"]
    for name in r0["params"]:
        assert torch.equal(r0["params"][name], r1["params"][name]), name
    # and training did something: alpha starts at exactly 1.0 (MSP Eq. 10)
    assert r0["params"]["encoder.prompts.0.alpha"].item() != 1.0

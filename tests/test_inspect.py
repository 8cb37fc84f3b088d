"""``fairseq-plm-inspect``: what a PLM or a checkpoint of this package is, and whether they fit."""

import os
import re
import subprocess
import sys

import pytest
import torch

from fairseq_plm.cli.inspect import SAMPLE, fingerprint_hex, main
from fairseq_plm.plm.frozen import fingerprint
from fairseq_plm.plm.loading import PLMLoadError, load_plm


def run(capsys, *argv):
    main([str(a) for a in argv])
    return capsys.readouterr().out


def field(out, name):
    m = re.search(rf"^{re.escape(name)}\s+(.*)$", out, flags=re.M)
    assert m, f"no {name!r} line in:\n{out}"
    return m.group(1)


def test_plm_directory(tiny, capsys):
    from fairseq_plm.plm.vocab import make_encoder

    out = run(capsys, tiny["plm"])
    model = load_plm(tiny["plm"])
    assert field(out, "family").startswith("gpt2")
    c = model.cfg
    assert field(out, "shape").startswith(f"{c.num_layers} layers, width {c.hidden_size}, {c.num_heads} heads")
    assert field(out, "parameters").startswith(f"{sum(p.numel() for p in model.parameters()):,} ")
    assert "model.safetensors (safetensors)" in field(out, "format")
    assert field(out, "special tokens").startswith("pad 0 '<pad>', eos 1 '</s>', unk 2 '<unk>'")
    assert field(out, "sample").endswith(" ".join(make_encoder(tiny["plm"])(SAMPLE)))
    assert field(out, "fingerprint") == fingerprint_hex(fingerprint(model))
    assert field(out, "method").endswith("yes")  # MSP takes a causal GPT
    assert "SGA (sga*): no, needs" in out


def test_fairseq_xlmr_release_and_its_model_pt(tmp_path, capsys):
    from test_backbone_parity import build_fairseq_roberta
    from test_plm_layouts import fairseq_2019, fairseq_2019_args

    fs, args, d = build_fairseq_roberta(seed=90)
    state = fairseq_2019(fs.state_dict(), fused=True)
    torch.save({"args": fairseq_2019_args(args), "model": state}, tmp_path / "model.pt")
    with open(tmp_path / "dict.txt", "w") as f:  # as released: no specials, no <mask> (fairseq adds them)
        f.writelines(f"{sym} 1\n" for sym in d.symbols[d.nspecial:-1])
    out = run(capsys, tmp_path)
    fmt = field(out, "format")
    assert fmt.startswith("fairseq; model.pt (torch zip pickle, args Namespace)")
    assert "prefix 'decoder.sentence_encoder.'" in fmt and "fused in_proj_weight" in fmt
    assert field(out, "family").startswith("roberta")
    assert field(out, "special tokens").startswith("pad 1 '<pad>', eos 2 '</s>', unk 3 '<unk>', bos 0 '<s>', mask")
    assert "MPT (mpt, mpt_sp, mpt_ft): yes" in out
    assert run(capsys, tmp_path / "model.pt") == out  # the model.pt itself: the same PLM


def test_checkpoint_and_whether_a_plm_matches(trained, tmp_path, capsys):
    from fairseq import checkpoint_utils

    from tiny import make_tiny_gpt

    ckpt = os.path.join(trained["save"], "checkpoint_last.pt")
    state = checkpoint_utils.load_checkpoint_to_cpu(ckpt)
    out = run(capsys, ckpt, "--plm", trained["plm"])
    assert field(out, "method") == "msp (--arch msp_single_stage, --task plm_translation)"
    trained_params = sum(v.numel() for k, v in state["model"].items() if v.is_floating_point())
    assert field(out, "trained params").startswith(f"{trained_params:,} in ")
    assert field(out, "updates").startswith(str(state["optimizer_history"][-1]["num_updates"]))
    assert field(out, "PLM needed") == os.path.abspath(trained["plm"])
    assert field(out, "PLM fingerprint") == fingerprint_hex(next(v for k, v in state["model"].items() if k.endswith("plm_fingerprint")))
    assert field(out, f"--plm {trained['plm']}") == "matches"

    other = tmp_path / "other-plm"  # same shape and tokenizer, other weights
    make_tiny_gpt(str(other), os.path.join(trained["plm"], "spiece.model"), seed=7)
    with pytest.raises(SystemExit) as e:
        run(capsys, ckpt, "--plm", other)
    assert e.value.code == 1
    assert field(capsys.readouterr().out, f"--plm {other}").startswith("does NOT match")


def test_bad_files_get_the_loaders_one_line_errors(tiny, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny["plm"], broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(PLMLoadError) as loader:
        load_plm(str(broken))
    with pytest.raises(SystemExit) as e:
        main([str(broken)])
    assert str(e.value) == f"fairseq-plm-inspect: error: {loader.value}"
    with pytest.raises(SystemExit) as e:  # a weights file stands for its directory
        main([str(weights)])
    assert str(e.value) == f"fairseq-plm-inspect: error: {loader.value}"

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as e:
        main([str(junk)])
    assert str(e.value) == f"fairseq-plm-inspect: error: {junk} is not a torch checkpoint (it starts with b'not a ch')"
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "missing-dir")])
    assert "missing-dir" in str(e.value) and "\n" not in str(e.value)


def test_runs_as_a_program(tmp_path):
    """``python -m fairseq_plm.cli.inspect`` (the fairseq-plm-inspect console script's module)."""
    p = subprocess.run([sys.executable, "-m", "fairseq_plm.cli.inspect", str(tmp_path)], capture_output=True,
                       text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1] == (f"fairseq-plm-inspect: error: {tmp_path} holds neither config.json "
                                                 f"(HuggingFace format) nor model.pt (fairseq format)")

"""Prompt adapters (issue 17.2): ``fairseq-plm-export`` writes adapter_model.safetensors +
adapter_config.json, and every place that takes a checkpoint takes the directory, with no
pickle involved. Generation from an exported directory equals generation from the original
checkpoint for MSP, prefix tuning and prompt tuning (``tests/test_msp.py``), SGA
(``tests/test_sga_cli.py``) and MSP's single-stage setting (here), via
``assert_adapter_generates_the_same``."""

import hashlib
import json
import os
import re
import struct
import subprocess
import sys

import pytest
import torch

from tiny import cli

from fairseq_plm.checkpoints import ADAPTER_CONFIG, ADAPTER_WEIGHTS, load_torch_file, read_checkpoint
from fairseq_plm.cli.export import main as export
from fairseq_plm.plm.errors import FairseqPLMError

GEN = ["--task", "plm_translation", "--beam", "2", "--max-len-a", "0", "--max-len-b", "8", "--cpu",
       "--batch-size", "5"]


def output_lines(out):
    """Everything fairseq-generate prints per sentence (source, reference, hypothesis, scores)."""
    return [line for line in out.splitlines() if re.match(r"^[STHDP]-\d+\t", line)]


def assert_adapter_generates_the_same(data, checkpoint, generate_args, out_from_checkpoint, adapter_dir):
    """Export ``checkpoint`` to ``adapter_dir``, generate from it with the same arguments, and
    compare every output line with ``out_from_checkpoint`` (fairseq-plm-generate's stdout)."""
    export(["--checkpoint", str(checkpoint), "--output", str(adapter_dir)])
    assert sorted(os.listdir(adapter_dir)) == [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
    out = cli("fairseq-plm-generate", data, "--path", adapter_dir, *generate_args).stdout
    expected = output_lines(out_from_checkpoint)
    assert expected and output_lines(out) == expected


def header_bytes(path):
    with open(path, "rb") as f:
        return 8 + struct.unpack("<Q", f.read(8))[0]


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    ckpt = os.path.join(trained["save"], "checkpoint_best.pt")
    export(["--checkpoint", ckpt, "--output", str(root / "fp32")])
    export(["--checkpoint", ckpt, "--output", str(root / "fp16"), "--fp16"])
    return dict(trained, ckpt=ckpt, fp32=str(root / "fp32"), fp16=str(root / "fp16"))


def test_generation_from_the_adapter_equals_the_checkpoint(exported, tmp_path):
    out = cli("fairseq-plm-generate", exported["data"], "--path", exported["ckpt"], *GEN).stdout
    assert_adapter_generates_the_same(exported["data"], exported["ckpt"], GEN, out, tmp_path / "adapter")


def test_adapter_holds_only_the_trained_tensors_and_says_what_they_belong_to(exported):
    state = load_torch_file(exported["ckpt"])
    trained = {k: v for k, v in state["model"].items() if k != "plm_fingerprint"}
    params = sum(v.numel() for v in trained.values())
    with open(os.path.join(exported["fp32"], ADAPTER_CONFIG)) as f:
        config = json.load(f)
    assert config["method"] == "msp" and config["arch"] == "msp_single_stage"
    assert config["cfg"]["model"]["prompt_length"] == 8 and "optimizer" in config["cfg"]  # the run's options
    assert config["plm"] == {"path": os.path.abspath(exported["plm"]),
                             "fingerprint": bytes(state["model"]["plm_fingerprint"].tolist()).hex()}
    with open(os.path.join(exported["data"], "dict.en.txt"), "rb") as f:
        assert config["dictionaries"]["dict.en.txt"]["sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert config["trained"]["parameters"] == params and config["fairseq_version"] == "0.12.3.1"
    from safetensors import safe_open

    with safe_open(os.path.join(exported["fp32"], ADAPTER_WEIGHTS), "pt") as f:
        assert set(f.keys()) == set(trained)  # the trained tensors, no optimizer state (the .pt has it)
    assert "last_optimizer_state" in state
    # 4 bytes per parameter in fp32, 2 with --fp16, plus the safetensors header; the JSON is a few KB
    for kind, width in (("fp32", 4), ("fp16", 2)):
        weights = os.path.join(exported[kind], ADAPTER_WEIGHTS)
        assert os.path.getsize(weights) - header_bytes(weights) == width * params
        assert header_bytes(weights) < 1024
    assert os.path.getsize(os.path.join(exported["fp32"], ADAPTER_CONFIG)) < 16_000


def test_the_python_api_loads_an_adapter_without_unpickling(exported, monkeypatch):
    from fairseq import checkpoint_utils

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load called for an adapter")

    reference = load_torch_file(exported["ckpt"])["model"]
    monkeypatch.setattr(torch, "load", no_pickle)
    for kind, tol in (("fp32", 0), ("fp16", 1e-3)):
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([exported[kind]])
        state = models[0].state_dict()
        for k, v in reference.items():
            assert state[k].dtype == v.dtype
            torch.testing.assert_close(state[k], v, atol=tol, rtol=tol)
        assert cfg.model._name == "msp_single_stage" and task.cfg._name == "plm_translation"
    moved = "/nowhere/mgpt"  # --model-overrides works as for a checkpoint
    with pytest.raises(FairseqPLMError, match=moved):
        checkpoint_utils.load_model_ensemble_and_task([exported["fp32"]], arg_overrides={"plm": moved})


def test_interactive_and_validate_take_an_adapter(exported):
    exe = os.path.join(os.path.dirname(sys.executable), "fairseq-plm-interactive")
    p = subprocess.run([exe, exported["data"], "--path", exported["fp16"], *GEN, "--buffer-size", "5", "--bpe",
                        "sentencepiece",
                        "--sentencepiece-model", os.path.join(exported["plm"], "spiece.model")],
                       input="Open the file\nSave all\n", capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    assert len(re.findall(r"^H-\d+\t", p.stdout, flags=re.M)) == 2
    p = cli("fairseq-plm-validate", exported["data"], "--path", exported["fp32"], "--task", "plm_translation",
            "--cpu", "--batch-size", "4")
    assert "valid on 'valid' subset" in p.stdout + p.stderr


def test_fine_tuning_starts_from_an_adapter(exported, tmp_path):
    """--finetune-from-model takes an adapter directory (fairseq's trainer only loads files:
    without compat it silently started from scratch)."""
    from conftest import TRAIN_ARGS

    p = cli("fairseq-plm-train", exported["data"], "--plm", exported["plm"], *TRAIN_ARGS, "--max-update", "1",
            "--finetune-from-model", exported["fp32"], "--save-dir", tmp_path / "ft", "--no-save")
    log = p.stdout + p.stderr
    assert f"Loaded checkpoint {exported['fp32']} (epoch 1 @ 0 updates)" in log, log[-3000:]


def test_bad_adapters_and_exports_are_one_line(exported, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / ADAPTER_CONFIG).write_text("{not json")
    with pytest.raises(FairseqPLMError, match=f"{broken / ADAPTER_CONFIG} is not readable JSON"):
        read_checkpoint(str(broken))
    (broken / ADAPTER_CONFIG).write_text(open(os.path.join(exported["fp32"], ADAPTER_CONFIG)).read())
    with pytest.raises(FairseqPLMError, match=f"has {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS}"):
        read_checkpoint(str(broken))
    data = open(os.path.join(exported["fp32"], ADAPTER_WEIGHTS), "rb").read()
    (broken / ADAPTER_WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(FairseqPLMError, match=f"{broken / ADAPTER_WEIGHTS} is truncated or corrupt"):
        read_checkpoint(str(broken))
    with pytest.raises(SystemExit, match="fairseq-plm-export: error: checkpoint not found: nowhere.pt"):
        export(["--checkpoint", "nowhere.pt", "--output", str(tmp_path / "x")])
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="is a non-empty directory that is not a prompt adapter"):
        export(["--checkpoint", exported["ckpt"], "--output", str(tmp_path / "notes")])
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_averaging_takes_adapters(exported, tmp_path):
    from fairseq_plm.cli.average_checkpoints import main as average

    out = str(tmp_path / "avg.pt")
    average(["--inputs", exported["fp32"], exported["ckpt"], "--output", out])
    averaged, reference = read_checkpoint(out)["model"], load_torch_file(exported["ckpt"])["model"]
    assert averaged.keys() == reference.keys()
    for k, v in reference.items():
        assert torch.equal(averaged[k], v), k  # the same prompts twice


def test_the_translator_api_takes_an_adapter_and_refuses_a_payload(exported, tmp_path):
    """fairseq_plm.Translator (and so fairseq-plm-serve) reads checkpoints through the same
    guarded reader: an adapter translates as its checkpoint, a pickle payload runs nothing."""
    from fairseq_plm import Translator

    from test_safe_loading import Payload

    texts = ["Open the file", "Save all", ""]
    t = Translator(device="cpu")
    t.add_direction("pt", exported["ckpt"], beam=2, max_len_b=8)
    t.add_direction("adapter", exported["fp32"], beam=2, max_len_b=8)
    assert t.translate(texts, "adapter") == t.translate(texts, "pt")
    state = torch.load(exported["ckpt"], weights_only=False)  # our own file
    state["extra_state"]["x"] = Payload(tmp_path / "pwned")
    torch.save(state, tmp_path / "shared.pt")
    with pytest.raises(FairseqPLMError, match="refused to load: it holds posix.system"):
        t.add_direction("evil", str(tmp_path / "shared.pt"))
    assert not (tmp_path / "pwned").exists()

"""No code runs when a checkpoint is loaded (issue 17.1), and a bad --path is one line (issue 13).

Every checkpoint is unpickled weights-only with the allowlist of fairseq's checkpoint types
(``fairseq_plm.checkpoints``). The other methods' checkpoints (SGA, CTC-NAT, deep fusion, MPT,
prefix/prompt tuning) load through the same function in their own end-to-end tests
(fairseq-plm-generate, fairseq-plm-mpt-eval, resumed runs)."""

import argparse
import collections
import os

import numpy as np
import pytest
import torch

from conftest import TRAIN_ARGS
from tiny import cli

from fairseq_plm.checkpoints import TRUST_ENV, load_torch_file, read_checkpoint
from fairseq_plm.plm.errors import FairseqPLMError

GEN = ["--task", "plm_translation", "--beam", "2", "--max-len-a", "0", "--max-len-b", "8", "--cpu",
       "--batch-size", "13"]


class Payload:
    """What an attacker puts into a shared prompt checkpoint: a pickle that runs a command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def payload(trained, tmp_path):
    state = torch.load(os.path.join(trained["save"], "checkpoint_last.pt"), weights_only=False)  # our own file
    marker = tmp_path / "pwned"
    state["extra_state"]["x"] = Payload(marker)
    path = str(tmp_path / "prompts.pt")
    torch.save(state, path)
    return path, marker


def test_payload_is_refused_by_generate_and_runs_nothing(trained, payload):
    path, marker = payload
    p = cli("fairseq-plm-generate", trained["data"], "--path", path, *GEN, check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert path in last and "posix.system" in last and "refused" in last, last
    assert not marker.exists()


def test_payload_is_refused_by_the_python_api_and_averaging(payload):
    from fairseq import checkpoint_utils

    from fairseq_plm.cli.average_checkpoints import average_checkpoints

    path, marker = payload
    with pytest.raises(FairseqPLMError, match="posix.system"):
        checkpoint_utils.load_model_ensemble_and_task([path])
    with pytest.raises(FairseqPLMError, match="posix.system"):
        average_checkpoints([path])
    assert not marker.exists()


def test_trusting_a_file_is_an_explicit_opt_in(payload, monkeypatch):
    from fairseq import checkpoint_utils

    path, marker = payload
    monkeypatch.setenv(TRUST_ENV, os.path.join(os.path.dirname(path), "another.pt"))  # another file: still refused
    with pytest.raises(FairseqPLMError):
        checkpoint_utils.load_checkpoint_to_cpu(path)
    assert not marker.exists()
    monkeypatch.setenv(TRUST_ENV, path)
    checkpoint_utils.load_checkpoint_to_cpu(path)
    assert marker.exists()  # the user asked for it: full unpickling


def test_the_allowlist_is_scoped_to_our_loading():
    from fairseq_plm.checkpoints import checkpoint_globals

    before = set(map(str, torch.serialization.get_safe_globals()))
    assert not before & {str(g) for g in checkpoint_globals()}


def test_every_checkpoint_training_writes_loads_under_the_allowlist(trained, tmp_path):
    """Epoch/best/last checkpoints with optimizer state, an averaged one, and a run with
    --no-save-optimizer-state and --eval-bleu (whose metrics put numpy arrays in the file)."""
    from fairseq_plm.cli.average_checkpoints import main as average

    files = sorted(os.path.join(trained["save"], f) for f in os.listdir(trained["save"]) if f.endswith(".pt"))
    assert len(files) == 4
    for f in files:
        state = read_checkpoint(f)
        assert "last_optimizer_state" in state and state["model"]
    avg = str(tmp_path / "avg.pt")
    average(["--inputs", trained["save"], "--num-epoch-checkpoints", "2", "--output", avg])
    assert read_checkpoint(avg)["model"]
    save = tmp_path / "bleu"
    cli("fairseq-plm-train", trained["data"], "--plm", trained["plm"], *TRAIN_ARGS, "--max-update", "1",
        "--save-dir", save, "--no-epoch-checkpoints", "--no-save-optimizer-state", "--eval-bleu",
        "--eval-bleu-args", '{"beam": 1, "max_len_a": 0, "max_len_b": 3}', "--best-checkpoint-metric", "bleu",
        "--maximize-best-checkpoint-metric")
    state = read_checkpoint(str(save / "checkpoint_last.pt"))
    assert "last_optimizer_state" not in state
    with pytest.raises(Exception, match="numpy"):  # what the allowlist is for
        torch.load(save / "checkpoint_last.pt", weights_only=True)


def test_older_fairseq_checkpoint_types_load_and_anything_else_is_named(tmp_path):
    """The types older fairseq versions and legacy-registered models write: a Namespace
    ``args``, a DictConfig ``cfg`` (omegaconf nodes, metadata, an empty defaultdict),
    meter objects, numpy scalars and arrays."""
    from fractions import Fraction

    from fairseq.logging.meters import AverageMeter, StopwatchMeter, TimeMeter
    from omegaconf import OmegaConf

    meter = AverageMeter()
    meter.update(np.float64(2.5))
    state = {"args": argparse.Namespace(arch="ctc_nat", lr=[0.1]),
             "cfg": OmegaConf.create({"model": {"_name": "msp", "prompt_length": 8}, "task": {"data": ["x"]}}),
             "model": collections.OrderedDict(w=torch.ones(2)),
             "extra_state": {"train_meters": {"loss": meter, "wall": StopwatchMeter(), "wps": TimeMeter()},
                             "val_loss": np.float32(1.5), "best": np.float64(3.0), "counts": np.array([1, 2])}}
    good = tmp_path / "old.pt"
    torch.save(state, good)
    loaded = load_torch_file(str(good))
    assert loaded["args"].arch == "ctc_nat" and loaded["cfg"].model.prompt_length == 8
    assert loaded["extra_state"]["train_meters"]["loss"].avg == 2.5 and loaded["extra_state"]["best"] == 3.0
    state["extra_state"]["odd"] = Fraction(1, 3)
    bad = tmp_path / "odd.pt"
    torch.save(state, bad)
    with pytest.raises(FairseqPLMError, match=f"{bad}: refused to load: it holds fractions.Fraction"):
        load_torch_file(str(bad))


# ------------------------------------------------------------------ bad --path: one line naming the file

def _bad_paths(trained, tmp):
    from safetensors.torch import save_file

    good = os.path.join(trained["save"], "checkpoint_last.pt")
    with open(good, "rb") as f:
        data = f.read()
    made = {}
    made["truncated"] = tmp / "truncated.pt"
    made["truncated"].write_bytes(data[: len(data) // 2])
    made["empty"] = tmp / "empty.pt"
    made["empty"].write_bytes(b"")
    made["text"] = tmp / "notes.pt"
    made["text"].write_text("not a checkpoint\n")
    made["safetensors"] = tmp / "model.safetensors"
    save_file({"w": torch.ones(2)}, str(made["safetensors"]))
    made["state_dict"] = tmp / "state_dict.pt"
    torch.save({"w": torch.ones(2)}, made["state_dict"])
    made["directory"] = tmp / "a_dir"
    made["directory"].mkdir()
    made["missing"] = tmp / "missing.pt"
    return {k: str(v) for k, v in made.items()}


EXPECTED = {"truncated": "is truncated", "empty": "is empty (0 bytes)", "text": "is not a torch checkpoint",
            "safetensors": "is a safetensors file", "state_dict": "is not a fairseq checkpoint",
            "directory": "is a directory", "missing": "checkpoint not found"}


def test_bad_checkpoints_raise_one_clear_error_naming_the_file(trained, tmp_path):
    from fairseq import checkpoint_utils

    for kind, path in _bad_paths(trained, tmp_path).items():
        with pytest.raises(FairseqPLMError) as e:
            checkpoint_utils.load_model_ensemble_and_task([path])
        assert path in str(e.value) and EXPECTED[kind] in str(e.value), (kind, str(e.value))
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("kind", ["truncated", "directory", "missing"])
def test_bad_path_is_one_line_in_generate(trained, tmp_path, kind):
    path = _bad_paths(trained, tmp_path)[kind]
    p = cli("fairseq-plm-generate", trained["data"], "--path", path, *GEN, check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr[-3000:]
    last = p.stderr.strip().splitlines()[-1]
    assert path in last and EXPECTED[kind] in last, last


def test_fairseq_xlmr_model_pt_with_a_payload_is_refused(tmp_path):
    from fairseq_plm.plm.loading import PLMLoadError, load_plm

    plm = tmp_path / "xlmr"
    plm.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"args": argparse.Namespace(arch="roberta_base"), "model": {}, "x": Payload(marker)}, plm / "model.pt")
    with pytest.raises(PLMLoadError, match=f"{plm / 'model.pt'}: refused to load: it holds posix.system"):
        load_plm(str(plm))
    assert not marker.exists()


def test_no_code_of_the_package_unpickles_outside_the_safe_loader():
    """Every ``torch.load`` call of the package (CLIs, recipes, benchmarks) is weights-only:
    the one full unpickling is the documented opt-in inside ``checkpoints.load_torch_file``
    (FAIRSEQ_PLM_TRUST_CHECKPOINTS). A new reader that loads a checkpoint another way fails here."""
    import ast

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    offenders, opt_ins = [], []
    for top in ("fairseq_plm", "benchmarks"):
        for dirpath, _, files in os.walk(os.path.join(root, top)):
            for name in sorted(f for f in files if f.endswith(".py")):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, root)
                for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                            and node.func.attr == "load" and isinstance(node.func.value, ast.Name)
                            and node.func.value.id == "torch"):
                        continue
                    weights_only = next((k.value for k in node.keywords if k.arg == "weights_only"), None)
                    if isinstance(weights_only, ast.Constant) and weights_only.value is True:
                        continue
                    (opt_ins if rel == os.path.join("fairseq_plm", "checkpoints.py") else offenders).append(
                        f"{rel}:{node.lineno}")
    assert not offenders, "unpickling outside the safe loader: " + ", ".join(offenders)
    assert len(opt_ins) == 1, f"checkpoints.py should hold exactly one full unpickling (the opt-in): {opt_ins}"

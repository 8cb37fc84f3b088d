import dataclasses
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

import fairseq_plm  # noqa: E402,F401  (registers models/tasks, applies compat)


def _config_classes_used_as_defaults():
    """fairseq-fixed declares nested configs as ``field(default=SomeConfigClass)``: the *class*
    is the default, so ``cfg.encoder.layers = 3`` writes a class attribute and leaks into
    every config built later in the process. We snapshot those classes around each test."""
    from fairseq.dataclass import FairseqDataclass
    import fairseq.models.transformer  # noqa: F401  (defines the offending configs)

    seen, todo, found = set(), list(FairseqDataclass.__subclasses__()), set()
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        todo.extend(cls.__subclasses__())
        if dataclasses.is_dataclass(cls):
            for f in dataclasses.fields(cls):
                if isinstance(f.default, type) and dataclasses.is_dataclass(f.default):
                    found.add(f.default)
    return sorted(found, key=lambda c: c.__qualname__)


_CONFIG_CLASSES = _config_classes_used_as_defaults()


@pytest.fixture(autouse=True)
def isolate_fairseq_config_classes():
    snapshot = {cls: dict(vars(cls)) for cls in _CONFIG_CLASSES}
    yield
    for cls, attrs in snapshot.items():
        for name in [n for n in vars(cls) if n not in attrs]:
            delattr(cls, name)
        for name, value in attrs.items():
            if not name.startswith("__") and vars(cls).get(name, object()) is not value:
                setattr(cls, name, value)


def built_once(request, tmp_path_factory, name, build):
    """Session data built once per test run, also under pytest-xdist: the first worker that
    needs it builds it in the run's shared temporary directory, holding a file lock; the other
    workers wait for the lock and read what it built (``build(dir)`` returns a JSON-able
    description: paths). Without workers, a plain session fixture."""
    worker = getattr(request.config, "workerinput", None)
    if worker is None:
        return build(str(tmp_path_factory.mktemp(name)))
    import fcntl
    import json
    import shutil

    root = tmp_path_factory.getbasetemp().parent / name  # one per run, seen by every worker
    with open(f"{root}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = root.parent / f"{name}.json"
        if done.exists():
            return json.loads(done.read_text())
        shutil.rmtree(root, ignore_errors=True)  # a worker that failed half-way
        root.mkdir()
        value = build(str(root))
        done.write_text(json.dumps(value))
        return value


@pytest.fixture(scope="session")
def tiny(request, tmp_path_factory):
    """Tiny real setup: gettext En-De corpus (120 train, 13 valid, 13 test), T5-style spm,
    tiny random GPT in HF format, binarized data."""
    from tiny import make_tiny_setup

    return built_once(request, tmp_path_factory, "tiny", make_tiny_setup)


@pytest.fixture(scope="session")
def tiny_xlmr(request, tiny, tmp_path_factory):
    """The same gettext corpus, binarized for a tiny random XLM-R (HF format, XLM-R ids)."""
    from tiny import make_tiny_xlmr_setup

    return built_once(request, tmp_path_factory, "tiny_xlmr",
                      lambda root: make_tiny_xlmr_setup(root, corpus_raw=tiny["raw"]))


@pytest.fixture(scope="session")
def tiny_fusion(request, tiny, tmp_path_factory):
    """The same gettext corpus for deep fusion: English source in a tiny random mBERT's WordPiece
    vocabulary (4 layers), German target in its own sentencepiece vocabulary."""
    from tiny import make_tiny_fusion_setup

    return built_once(request, tmp_path_factory, "tiny_fusion", lambda root: make_tiny_fusion_setup(root, tiny["raw"]))


TRAIN_ARGS = ["--task", "plm_translation", "--arch", "msp_single_stage", "--prompt-length", "8",
              "--optimizer", "adam", "--lr", "0.01", "--max-tokens", "800",
              "--criterion", "label_smoothed_cross_entropy", "--cpu", "--no-progress-bar",
              "--log-format", "simple", "--log-interval", "1", "--seed", "3"]


@pytest.fixture(scope="session")
def trained(request, tiny, tmp_path_factory):
    """Two epochs of deep-prompt training through fairseq-plm-train."""
    from tiny import cli

    def train(save):
        cli("fairseq-plm-train", tiny["data"], "--plm", tiny["plm"], *TRAIN_ARGS, "--max-epoch", "2",
            "--save-dir", save)
        return dict(tiny, save=save)

    return built_once(request, tmp_path_factory, "ckpt", train)


@pytest.fixture(scope="session")
def prompt_sets(request, trained, tiny_xlmr, tmp_path_factory):
    return built_once(request, tmp_path_factory, "prompt_sets", lambda root: _prompt_sets(root, trained, tiny_xlmr))


def _prompt_sets(root, trained, tiny_xlmr):
    """Prompt checkpoints on the tiny GPT (MSP, prefix tuning de->en, prompt tuning, next to
    ``trained``'s single-stage prompts) and on the tiny XLM-R (SGA with CTC and with
    Mask-Predict alignment), a few updates each, trained in one process."""
    import json
    import subprocess
    import sys

    from pathlib import Path

    root = Path(root)
    common = ["--task", "plm_translation", "--optimizer", "adam", "--lr", "0.01", "--max-tokens", "800", "--cpu",
              "--no-progress-bar", "--log-format", "simple", "--seed", "3", "--max-update", "2",
              "--no-epoch-checkpoints", "--no-save-optimizer-state", "--disable-validation"]
    gpt = ["--criterion", "label_smoothed_cross_entropy", "--plm", trained["plm"]]
    nat = ["--criterion", "plm_nat_loss", "--plm", tiny_xlmr["plm"]]
    runs = {
        "msp": [trained["data"], "--arch", "msp", "--prompt-length", "6", *gpt],
        "prefix": [trained["data"], "--arch", "prefix_tuning", "--prompt-length", "4", "--prefix-mlp-dim", "16",
                   "-s", "de", "-t", "en", *gpt],
        "ptune": [trained["data"], "--arch", "prompt_tuning", "--prompt-length", "5", *gpt],
        "sga": [tiny_xlmr["data"], "--arch", "sga", "--prompt-length", "4", *nat],
        "sga_mp": [tiny_xlmr["data"], "--arch", "sga_mask_predict", "--prompt-length", "3",
                   "--max-target-length", "64", *nat],
    }
    argv = [[*a, *common, "--save-dir", str(root / name)] for name, a in runs.items()]
    p = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "train_many.py"), json.dumps(argv)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-5000:]
    ckpts = {name: str(root / name / "checkpoint_last.pt") for name in runs}
    ckpts["single"] = os.path.join(trained["save"], "checkpoint_last.pt")
    return dict(ckpts=ckpts, gpt_plm=trained["plm"], xlmr_plm=tiny_xlmr["plm"], raw=trained["raw"],
                data=trained["data"])

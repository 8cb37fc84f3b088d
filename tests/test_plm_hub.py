"""``--plm org/name[@revision]``: Hub ids through huggingface_hub's standard cache.

No test touches the network: every test runs with ``HF_HUB_OFFLINE=1`` on a cache it builds itself in
a temporary ``HF_HOME`` (``hub/models--org--name/{blobs,snapshots/<commit>,refs/main}``, as
huggingface_hub writes it); the online path is exercised with the Hub API replaced by a fake.
"""

import hashlib
import json
import os
import re
import shutil

import pytest
import torch

from tiny import cli  # noqa: F401  (tests/ is on sys.path via conftest)

from fairseq_plm.plm import hub
from fairseq_plm.plm.errors import FairseqPLMError
from fairseq_plm.plm.loading import load_plm

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


def hub_cache(hf_home, repo_id, src_dir, commit, ref="main", listing=None):
    """Store the files of ``src_dir`` as a snapshot of ``repo_id`` at ``commit`` in the standard
    cache under ``hf_home``: content-addressed blobs, snapshot symlinks, ``refs/<ref>``, and with
    ``listing`` the repository's file list (``trees/<commit>.json``), which huggingface_hub writes when
    it downloads selected files of a larger repository."""
    repo = os.path.join(str(hf_home), "hub", "models--" + repo_id.replace("/", "--"))
    if listing is not None:
        os.makedirs(os.path.join(repo, "trees"), exist_ok=True)
        with open(os.path.join(repo, "trees", commit + ".json"), "w") as f:
            json.dump({"format_version": 1, "files": {name: {"size": 1, "blob_id": "0" * 40} for name in listing}}, f)
    snapshot = os.path.join(repo, "snapshots", commit)
    os.makedirs(os.path.join(repo, "blobs"), exist_ok=True)
    os.makedirs(snapshot, exist_ok=True)
    for name in sorted(os.listdir(src_dir)):
        with open(os.path.join(src_dir, name), "rb") as f:
            data = f.read()
        blob = os.path.join(repo, "blobs", hashlib.sha256(data).hexdigest())
        with open(blob, "wb") as f:
            f.write(data)
        os.symlink(os.path.relpath(blob, snapshot), os.path.join(snapshot, name))
    if ref is not None:
        os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
        with open(os.path.join(repo, "refs", ref), "w") as f:
            f.write(commit)
    return snapshot


@pytest.fixture
def offline_home(tmp_path, monkeypatch):
    home = tmp_path / "hf_home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def tiny_gpt2_dir(path, seed):
    from fairseq_plm.plm.config import PLMConfig
    from fairseq_plm.plm.export import save_hf_gpt2
    from fairseq_plm.plm.gpt import GPT

    cfg = PLMConfig(family="gpt2", vocab_size=40, hidden_size=16, num_layers=2, num_heads=2,
                    intermediate_size=32, max_positions=32, activation="gelu_new")
    save_hf_gpt2(GPT(cfg).init_random(seed), str(path))
    return str(path)


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_hub_id_loads_from_the_cache_offline(tmp_path, offline_home):
    src = tiny_gpt2_dir(tmp_path / "src", seed=1)
    # as left by an online run that fetched 2 of the repository's 5 files
    snapshot = hub_cache(offline_home, "test-org/tiny-gpt2", src, COMMIT_A,
                         listing=os.listdir(src) + ["pytorch_model.bin", "tf_model.h5", "flax_model.msgpack"])
    model = load_plm("test-org/tiny-gpt2")
    assert same_weights(model, load_plm(src))
    resolved = hub.resolve("test-org/tiny-gpt2")
    assert os.path.samefile(resolved.path, snapshot) and resolved.commit == COMMIT_A
    assert hub.pinned_plm_path("test-org/tiny-gpt2") == f"test-org/tiny-gpt2@{COMMIT_A}"
    assert same_weights(load_plm(f"test-org/tiny-gpt2@{COMMIT_A}"), model)


def test_revision_selects_the_snapshot(tmp_path, offline_home):
    old = tiny_gpt2_dir(tmp_path / "old", seed=1)
    new = tiny_gpt2_dir(tmp_path / "new", seed=2)
    hub_cache(offline_home, "test-org/tiny-gpt2", old, COMMIT_A, ref=None)
    hub_cache(offline_home, "test-org/tiny-gpt2", new, COMMIT_B, ref="main")
    assert same_weights(load_plm("test-org/tiny-gpt2"), load_plm(new))
    assert same_weights(load_plm(f"test-org/tiny-gpt2@{COMMIT_A}"), load_plm(old))
    assert hub.pinned_plm_path("test-org/tiny-gpt2@main") == f"test-org/tiny-gpt2@{COMMIT_B}"


def test_uncached_id_offline_is_one_clear_line(offline_home):
    with pytest.raises(FairseqPLMError) as e:
        load_plm("test-org/not-cached")
    msg = str(e.value)
    assert "\n" not in msg
    assert "test-org/not-cached" in msg and "HF_HUB_OFFLINE=1" in msg and str(offline_home) in msg
    with pytest.raises(FairseqPLMError, match="test-org/tiny-gpt2.*no snapshot"):
        load_plm(f"test-org/tiny-gpt2@{COMMIT_B}")


def test_cached_snapshot_without_weights_offline(tmp_path, offline_home):
    """Only the config and tokenizer were fetched (e.g. by fairseq-plm-encode): loading the PLM offline says so."""
    src = tiny_gpt2_dir(tmp_path / "src", seed=1)
    os.remove(os.path.join(src, "model.safetensors"))
    hub_cache(offline_home, "test-org/tiny-gpt2", src, COMMIT_A)
    assert hub.local_plm_path("test-org/tiny-gpt2", need_weights=False).endswith(COMMIT_A)
    with pytest.raises(FairseqPLMError, match="no weights file"):
        load_plm("test-org/tiny-gpt2")
    assert load_plm("test-org/tiny-gpt2", random_init=True).cfg.num_layers == 2


def test_local_paths_and_presets_are_not_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("org/name")
    assert not hub.is_hub_id("org/name")  # an existing local directory wins
    assert not hub.is_hub_id("mgpt") and not hub.is_hub_id("gpt2")  # presets
    assert not hub.is_hub_id("data-bin/dict.en.txt")  # a missing file, not an id
    assert hub.parse_hub_id("FacebookAI/xlm-roberta-base@v1.0") == ("FacebookAI/xlm-roberta-base", "v1.0")
    assert hub.parse_hub_id("THUMT/mGPT") == ("THUMT/mGPT", None)


# what the three papers' PLMs hold on the Hub (file listings of the repositories)
MGPT_FILES = [".gitattributes", "README.md", "config.json", "pytorch_model.bin", "spiece.model"]
XLMR_FILES = [".gitattributes", "README.md", "config.json", "flax_model.msgpack", "model.safetensors",
              "onnx/config.json", "onnx/model.onnx", "pytorch_model.bin", "sentencepiece.bpe.model",
              "tf_model.h5", "tokenizer.json"]
MBERT_FILES = [".gitattributes", "README.md", "config.json", "flax_model.msgpack", "model.safetensors",
               "pytorch_model.bin", "tf_model.h5", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]
SHARDED_FILES = ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                 "model.safetensors.index.json", "pytorch_model-00001-of-00002.bin",
                 "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json", "vocab.txt"]


def test_only_the_files_the_loader_reads_are_fetched():
    assert hub.files_to_fetch(MGPT_FILES) == ["config.json", "spiece.model", "pytorch_model.bin"]
    assert hub.files_to_fetch(XLMR_FILES) == ["config.json", "sentencepiece.bpe.model", "model.safetensors"]
    assert hub.files_to_fetch(MBERT_FILES) == ["config.json", "vocab.txt", "model.safetensors"]
    assert hub.files_to_fetch(SHARDED_FILES) == ["config.json", "vocab.txt", "model.safetensors.index.json",
                                                 "model-00001-of-00002.safetensors",
                                                 "model-00002-of-00002.safetensors"]
    assert hub.files_to_fetch(XLMR_FILES, need_weights=False) == ["config.json", "sentencepiece.bpe.model"]


def test_online_download_asks_for_those_files_only(tmp_path, monkeypatch):
    """The online path with the Hub replaced by a fake: the listing decides what is downloaded."""
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    snapshot = tiny_gpt2_dir(tmp_path / "home" / "snapshots" / COMMIT_B, seed=3)
    calls = []

    class Info:
        sha = COMMIT_B
        siblings = [type("S", (), {"rfilename": f})() for f in XLMR_FILES]

    class FakeApi:
        def __init__(self, *a, **k):
            pass

        def model_info(self, repo_id, revision=None, **k):
            calls.append(("model_info", repo_id, revision))
            return Info()

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None, cache_dir=None, **k):
        calls.append(("snapshot_download", repo_id, revision, tuple(allow_patterns), cache_dir))
        return snapshot

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    resolved = hub.resolve("FacebookAI/xlm-roberta-base")
    assert resolved.commit == COMMIT_B and resolved.path == snapshot
    assert calls == [("model_info", "FacebookAI/xlm-roberta-base", "main"),
                     ("snapshot_download", "FacebookAI/xlm-roberta-base", "main",
                      ("config.json", "sentencepiece.bpe.model", "model.safetensors"),
                      str(tmp_path / "home" / "hub"))]


def test_hub_id_for_tokenizer_and_dictionary(tiny, tmp_path, offline_home):
    from fairseq_plm.plm.vocab import load_dictionary, make_encoder, tokenizer_file

    hub_cache(offline_home, "test-org/tiny-mgpt", tiny["plm"], COMMIT_A)
    assert load_dictionary("test-org/tiny-mgpt").symbols == load_dictionary(tiny["plm"]).symbols
    assert make_encoder("test-org/tiny-mgpt")("Hallo Welt") == make_encoder(tiny["plm"])("Hallo Welt")
    assert os.path.basename(tokenizer_file("test-org/tiny-mgpt")) == "spiece.model"


TRAIN = ["--task", "plm_translation", "--arch", "msp_single_stage", "--prompt-length", "4", "--optimizer", "adam",
         "--lr", "0.01", "--max-tokens", "1000", "--max-update", "2", "--criterion", "label_smoothed_cross_entropy",
         "--cpu", "--no-epoch-checkpoints"]
GEN = ["--task", "plm_translation", "--beam", "2", "--max-len-a", "0", "--max-len-b", "5", "--cpu", "--batch-size", "13"]


def test_checkpoint_pins_the_hub_revision_for_generation_elsewhere(tiny, tmp_path, monkeypatch, capsys):
    """Train with --plm org/name (offline, test-built cache); the checkpoint records org/name@<commit>;
    on "another machine" whose cache has a newer main, generation still finds the trained-on PLM."""
    home = tmp_path / "home"
    hub_cache(home, "test-org/tiny-mgpt", tiny["plm"], COMMIT_A)
    env = {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    save = tmp_path / "ckpt"
    cli("fairseq-plm-train", tiny["data"], "--plm", "test-org/tiny-mgpt", *TRAIN, "--save-dir", save, env=env)
    ckpt = save / "checkpoint_last.pt"
    from fairseq import checkpoint_utils

    state = checkpoint_utils.load_checkpoint_to_cpu(str(ckpt))
    assert state["cfg"]["model"]["plm"] == f"test-org/tiny-mgpt@{COMMIT_A}"

    other = tmp_path / "other-machine"
    retrained = tmp_path / "retrained"
    shutil.copytree(tiny["plm"], retrained)
    torch.manual_seed(0)
    from safetensors.torch import load_file, save_file

    w = load_file(str(retrained / "model.safetensors"))
    save_file({k: v + 0.01 * torch.randn_like(v) for k, v in w.items()}, str(retrained / "model.safetensors"))
    hub_cache(other, "test-org/tiny-mgpt", retrained, COMMIT_B, ref="main")  # main moved on
    hub_cache(other, "test-org/tiny-mgpt", tiny["plm"], COMMIT_A, ref=None)
    out = cli("fairseq-plm-generate", tiny["data"], "--path", ckpt, *GEN,
              env={"HF_HOME": str(other), "HF_HUB_OFFLINE": "1"}).stdout
    assert sorted(int(i) for i in re.findall(r"^H-(\d+)\t", out, flags=re.M)) == list(range(13))

    # the inspector on that machine: today's main is not the PLM, the pinned commit is
    from fairseq_plm.cli.inspect import main

    monkeypatch.setenv("HF_HOME", str(other))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as e:
        main([str(ckpt), "--plm", "test-org/tiny-mgpt"])
    assert e.value.code == 1 and "does NOT match" in capsys.readouterr().out
    main([str(ckpt), "--plm", f"test-org/tiny-mgpt@{COMMIT_A}"])
    out = capsys.readouterr().out
    assert re.search(rf"PLM needed\s+test-org/tiny-mgpt@{COMMIT_A}", out) and "matches" in out


def test_inspect_a_hub_id_offline(tiny, tmp_path, offline_home, capsys):
    from fairseq_plm.cli.inspect import main

    hub_cache(offline_home, "test-org/tiny-mgpt", tiny["plm"], COMMIT_A)
    main(["test-org/tiny-mgpt"])
    out = capsys.readouterr().out
    assert f"test-org/tiny-mgpt@{COMMIT_A}" in out and "gpt2" in out
    with pytest.raises(SystemExit) as e:
        main(["test-org/missing"])
    assert str(e.value).startswith("fairseq-plm-inspect: error: test-org/missing: ") and "\n" not in str(e.value)

"""The MSP comparison recipe (MSP Tables 1 and 5 in small; the quickstart runs three of its
systems) on tiny data, and the demo-PLM hold-out rule."""

import json
import os
import re

import pytest

from fairseq_plm.recipes import msp_compare as mc
from tiny import REPO

@pytest.fixture(scope="module")
def compared(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("msp_compare")
    argv = ["--plm", tiny["plm"], "--raw", tiny["raw"], "--out", str(out), "--minutes", "0.03",
            "--systems", "msp,transformer,copy", "--prompt-length", "4", "--max-tokens", "400",
            "--warmup-updates", "5", "--batch-size", "8", "--speed", "--cpu"]
    mc.main(argv)
    return {"out": str(out), "argv": argv, "tiny": tiny}


def test_one_table_with_every_system(compared):
    rows = json.load(open(os.path.join(compared["out"], "results.json")))["rows"]
    assert [r["system"] for r in rows] == ["msp", "transformer", "copy"]
    for r in rows:
        assert re.fullmatch(r"nrefs:1\|case:mixed\|eff:no\|tok:13a\|smooth:exp\|version:[\d.]+", r["signature"])
        assert 0 <= r["bleu"] <= 100
        if r["system"] != "copy":
            assert r["updates"] >= 1 and r["trained_params"] > 0
            assert r["sent_per_s_bs1"] > 0 and r["sent_per_s_batched"] > 0
    by = {r["system"]: r for r in rows}
    assert by["copy"]["trained_params"] == 0
    # MSP trains its three stage prompts only; the Transformer all of its weights
    assert by["msp"]["trained_params"] == 3 * 2 * 2 * 4 * 32 + 3 and by["transformer"]["trained_params"] > 10 ** 6
    table = open(os.path.join(compared["out"], "results.md")).read()
    for label in ("MSP", "Transformer from scratch", "copy the source"):
        assert f"| {label} |" in table


def test_every_test_sentence_is_translated_by_every_system(compared):
    n = len(open(os.path.join(compared["tiny"]["raw"], "test.de"), encoding="utf-8").read().splitlines())
    for name in ("msp", "transformer"):
        text = open(os.path.join(compared["out"], name, "gen-test.out"), encoding="utf-8").read()
        assert sorted(int(i) for i in re.findall(r"^D-(\d+)\t", text, flags=re.M)) == list(range(n))


def test_same_budget_and_threads_for_every_system(compared):
    for name in ("msp", "transformer"):
        log = open(os.path.join(compared["out"], name, "train.log"), encoding="utf-8").read()
        assert "'stop_time_hours': 0.0005" in log or "stop_time_hours=0.0005" in log
        assert "Stopping training due to cumulative_training_time" in log


def test_rerun_skips_finished_systems(compared, capsys):
    logs = {n: os.path.getsize(os.path.join(compared["out"], n, "train.log")) for n in ("msp", "transformer")}
    mc.main([a for a in compared["argv"] if a != "--speed"])
    out = capsys.readouterr().out
    assert not re.search(r"\] (training|translating) ", out)
    assert logs == {n: os.path.getsize(os.path.join(compared["out"], n, "train.log")) for n in logs}


def test_unknown_system_is_one_line(tiny, tmp_path, capsys):
    with pytest.raises(SystemExit):
        mc.main(["--plm", tiny["plm"], "--out", str(tmp_path), "--minutes", "1", "--systems", "msp,nope"])
    assert "--systems: unknown nope" in capsys.readouterr().err


def test_pretraining_text_holds_out_every_evaluation_sentence():
    """No valid/test sentence of any recipe (nor a translation of one) is pre-training text."""
    from fairseq_plm.data.gettext_corpus import read_catalogs, split_pairs
    from fairseq_plm.recipes import pretrain_common as pc

    text = pc.build_text(["de", "fr"])
    mono, docs = text["train"]
    seen = set(mono) | {s for d in docs for s in d}
    splits = split_pairs(read_catalogs("de"), valid=200, test=200)
    evaluation = {s for name in ("valid", "test") for pair in splits[name] for s in pair}
    assert not evaluation & seen
    # the reserved md5 band (future evaluation sets) is held out too, in every language
    assert not any(pc.in_reserved_band(en) for en, _ in docs)
    assert text["stats"]["dropped_pairs"] > 0 and len(docs) > 10000
    vmono, vdocs = text["valid"]
    assert vdocs and not set(vdocs) & set(docs)


def test_shipped_plms_load_and_say_how_they_were_made():
    from fairseq_plm.plm.loading import load_plm

    for name, family in (("tiny-mgpt", "gpt2"), ("tiny-xlmr", "roberta")):
        path = os.path.join(REPO, "examples", "plms", name)
        assert load_plm(path).cfg.family == family
        assert os.path.getsize(os.path.join(path, "model.safetensors")) <= 16 * 2 ** 20
        readme = open(os.path.join(path, "README.md"), encoding="utf-8").read()
        assert "python -m fairseq_plm.recipes.pretrain_tiny_" in readme
        stats = json.load(open(os.path.join(path, "pretrain.json")))
        assert stats["step"] > 0 and stats["held_out_english"] > 0

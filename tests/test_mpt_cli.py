"""MPT end to end through the real commands on a tiny XLM-R: fairseq-train --user-dir with
the synthetic NLI task and a parallel corpus, fairseq-plm-mpt-eval, fairseq-plm-mpt-aggregate,
the SP and FT baselines, and a frozen-PLM run."""

import json
import os
import random
import subprocess
import sys

import pytest
import sentencepiece as spm
import torch

from tiny import USER_DIR, cli, make_tiny_xlmr, make_xlmr_spm

from fairseq_plm.data.nli import write_tsv
from fairseq_plm.recipes.mpt_data import SET_A, synthetic_example, synthetic_nli, synthetic_parallel


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("mpt")
    data = synthetic_nli(str(root / "data"), n_train=60, n_valid=30, n_test=60)
    write_tsv(str(root / "parallel.tsv"), synthetic_parallel(n=60))
    rng = random.Random(0)
    with open(root / "spm.txt", "w") as f:  # the tokenizer sees both "languages"
        for i in range(3000):
            e = synthetic_example(rng, i % 3, "en" if i % 2 else "de")
            f.write(f"{e['premise']}. {e['hypothesis']}?\n")
    model = make_xlmr_spm([root / "spm.txt"], root / "xspm", vocab_size=85)
    make_tiny_xlmr(str(root / "plm"), model)
    sp = spm.SentencePieceProcessor()
    sp.Load(model)
    words = [w for w in SET_A if len(sp.EncodeAsPieces(w)) == 1][:3]  # single-token label words
    assert len(words) == 3
    verbalizer = f"entailment:{words[0]},neutral:{words[1]},contradiction:{words[2]}"
    return {"root": root, "data": data, "plm": str(root / "plm"), "parallel": str(root / "parallel.tsv"),
            "verbalizer": verbalizer}


def train(s, save, *extra, epochs=10):
    return cli("fairseq-train", s["data"], "--user-dir", USER_DIR, "--task", "mpt_nli", "--plm", s["plm"],
               "--verbalizer", s["verbalizer"], "--criterion", "mpt_loss", "--optimizer", "adam", "--lr", "1e-3",
               "--batch-size", "12", "--max-epoch", epochs, "--cpu", "--no-progress-bar", "--log-format", "simple",
               "--log-interval", "1", "--seed", "1", "--save-dir", save, "--no-epoch-checkpoints",
               "--best-checkpoint-metric", "accuracy", "--maximize-best-checkpoint-metric", *extra)


def evaluate(s, save, name, langs="en,de"):
    out = os.path.join(save, f"{name}.json")
    p = cli("fairseq-plm-mpt-eval", "--path", os.path.join(save, "checkpoint_best.pt"), "--langs", langs,
            "--name", name, "--json", out, "--cpu")
    with open(out) as f:
        return p.stdout, json.load(f)


def test_mpt_trains_with_parallel_data_and_evaluates_every_language(setup, tmp_path):
    save = str(tmp_path / "mpt")
    log = train(setup, save, "--arch", "mpt", "--parallel-data", setup["parallel"]).stdout
    assert "kld_loss" in log and "ce_loss" in log  # both terms of Eq. 8 logged
    assert "train: 60 NLI examples with 60 parallel pairs" in log
    table, result = evaluate(setup, save, "MPT", langs="en,de,fr")
    assert result["accuracy"]["en"] > 70  # chance is 33.3 on the balanced synthetic test
    assert set(result["accuracy"]) == {"en", "de"}  # no French test data: left out
    assert "| Method | EN | DE | Avg. |" in table and "| MPT | " in table
    assert result["avg"] == pytest.approx((result["accuracy"]["en"] + result["accuracy"]["de"]) / 2)


def test_sp_and_ft_baselines(setup, tmp_path):
    save = str(tmp_path / "sp")
    train(setup, save, "--arch", "mpt_sp", "--alpha", "1", epochs=6)
    assert evaluate(setup, save, "SP")[1]["accuracy"]["en"] > 50
    save = str(tmp_path / "ft")
    train(setup, save, "--arch", "mpt_ft", "--input-format", "pair", epochs=3)
    table, result = evaluate(setup, save, "FT")
    assert "| FT | " in table and set(result["accuracy"]) == {"en", "de"}


def test_pct_baseline_trains_with_augmented_templates_and_evaluates(setup, tmp_path):
    save = str(tmp_path / "pct")
    log = train(setup, save, "--arch", "mpt_pct", "--input-format", "pct", "--criterion", "pct_loss",
                "--pct-langs", "de,fr", epochs=8).stdout
    assert "train: 60 questions, each with a question under the template of one of de, fr (PCT)" in log
    assert "ce_aug_loss" in log and "kld_loss" in log
    table, result = evaluate(setup, save, "PCT")
    assert "| PCT | " in table and result["accuracy"]["en"] > 50
    p = cli("fairseq-plm-train", setup["data"], "--task", "mpt_nli", "--plm", setup["plm"], "--arch", "mpt_pct",
            "--verbalizer", setup["verbalizer"], "--criterion", "pct_loss", "--batch-size", "8", "--cpu",
            "--save-dir", str(tmp_path / "bad"), check=False)
    assert p.returncode != 0 and "use --input-format pct" in p.stderr.strip().splitlines()[-1]
    p = cli("fairseq-plm-train", setup["data"], "--task", "mpt_nli", "--plm", setup["plm"], "--arch", "mpt_pct",
            "--input-format", "pct", "--pct-langs", "xx", "--verbalizer", setup["verbalizer"], "--criterion",
            "pct_loss", "--batch-size", "8", "--cpu", "--save-dir", str(tmp_path / "bad"), check=False)
    assert p.returncode != 0 and "no PCT template for language 'xx'" in p.stderr.strip().splitlines()[-1]


def test_aggregate_gives_mean_and_sample_std_per_method(tmp_path):
    runs = [("MPT", {"en": 50.0, "de": 40.0}), ("MPT", {"en": 54.0, "de": 44.0}), ("SP", {"en": 45.0, "de": 30.0})]
    paths = []
    for i, (name, acc) in enumerate(runs):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps({"name": name, "accuracy": acc, "avg": sum(acc.values()) / 2}))
    table = cli("fairseq-plm-mpt-aggregate", *paths).stdout
    assert "| Method | EN | DE | Avg. |" in table
    assert "| MPT (n=2) | 52.0 ± 2.8 | 42.0 ± 2.8 | 47.0 ± 2.8 |" in table  # std of (50, 54) = 2.83
    assert "| SP (n=1) | 45.0 ± 0.0 | 30.0 ± 0.0 | 37.5 ± 0.0 |" in table


def test_frozen_plm_checkpoint_holds_prompt_and_translator_only(setup, tmp_path):
    save = str(tmp_path / "frozen")
    log = train(setup, save, "--arch", "mpt", "--freeze-plm", "--parallel-data", setup["parallel"], epochs=1).stdout
    state = torch.load(os.path.join(save, "checkpoint_best.pt"), map_location="cpu", weights_only=False)["model"]
    assert not any(k.startswith("plm.") for k in state) and "plm_fingerprint" in state
    assert any(k.startswith("translator.") for k in state) and any(k.startswith("prompt.") for k in state)
    assert "num. trained" in log or "trained:" in log
    evaluate(setup, save, "MPT-frozen", langs="en")


def test_bad_input_gives_a_clear_error(setup, tmp_path):
    p = cli("fairseq-plm-train", setup["data"], "--task", "mpt_nli", "--plm", setup["plm"], "--arch", "mpt",
            "--criterion", "mpt_loss", "--verbalizer", "entailment:Yes,neutral:Maybe,contradiction:No",
            "--batch-size", "8", "--cpu", "--save-dir", str(tmp_path), check=False)
    assert p.returncode != 0 and "--verbalizer: label word 'Yes' is not one token" in p.stderr
    p = cli("fairseq-plm-train", setup["data"], "--task", "mpt_nli", "--plm", setup["plm"], "--arch", "mpt_ft",
            "--verbalizer", setup["verbalizer"], "--criterion", "mpt_loss", "--batch-size", "8", "--cpu",
            "--save-dir", str(tmp_path), check=False)
    assert p.returncode != 0 and "--arch mpt_ft reads sentence pairs: use --input-format pair" in p.stderr


def test_two_process_data_parallel_training(setup, tmp_path):
    """fairseq's own data-parallel launcher (2 gloo processes on CPU): the parallel rows and
    the loss work under DDP and the replicas stay identical."""
    out = tmp_path / "dumps"
    out.mkdir()
    env = dict(os.environ, DDP_DRIVER_OUT=str(out), OMP_NUM_THREADS="1")
    cmd = [sys.executable, os.path.join(os.path.dirname(__file__), "ddp_driver.py"), setup["data"],
           "--user-dir", USER_DIR, "--task", "mpt_nli", "--plm", setup["plm"], "--arch", "mpt",
           "--verbalizer", setup["verbalizer"], "--parallel-data", setup["parallel"], "--criterion", "mpt_loss",
           "--optimizer", "adam", "--lr", "1e-3", "--batch-size", "8", "--max-update", "4", "--cpu",
           "--distributed-world-size", "2", "--save-dir", str(tmp_path / "ckpt"), "--no-epoch-checkpoints"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    r0, r1 = (torch.load(out / f"rank{r}.pt") for r in (0, 1))
    assert r0["world_size"] == 2 and r0["num_updates"] == r1["num_updates"] == 4
    assert any(n.startswith("translator.") for n in r0["params"])
    for name in r0["params"]:
        assert torch.equal(r0["params"][name], r1["params"][name]), name


def compare_data(s):
    """The synthetic task in mpt_compare's layout: test.<lang>.tsv, parallel.tsv, parallel_task.tsv."""
    from fairseq_plm.data.nli import read_nli

    root = s["root"] / "compare-data"
    if not root.exists():
        root.mkdir()
        for name in ("train", "valid"):
            (root / f"{name}.tsv").write_text((s["root"] / "data" / f"{name}.tsv").read_text())
        rows = read_nli(str(s["root"] / "data" / "test.tsv"), "en")
        for lang in ("en", "de"):
            write_tsv(str(root / f"test.{lang}.tsv"),
                      [{"premise": r.premise, "hypothesis": r.hypothesis, "label": ("entailment", "neutral",
                        "contradiction")[r.label], "language": lang} for r in rows if r.language == lang][:30])
        write_tsv(str(root / "parallel.tsv"), synthetic_parallel(n=30))
        write_tsv(str(root / "parallel_task.tsv"), synthetic_parallel(n=30, seed=5))
    return str(root)


def test_mpt_compare_trains_every_system_at_equal_budget_and_resumes(setup, tmp_path, capsys):
    """The recipe in-process (it runs fairseq-train as a command for every run)."""
    from fairseq_plm.recipes.mpt_compare import main

    data, out = compare_data(setup), str(tmp_path / "runs")
    common = ["--data", data, "--plm", setup["plm"], "--out", out, "--shots", "4", "--max-update", "3",
              "--validate-updates", "3", "--cpu", "--verbalizer", setup["verbalizer"], "--lr", "1e-3"]
    main(common + ["--seeds", "1", "--methods", "FT,SP,PCT,MPT", "--ablations", ""])
    text = capsys.readouterr().out
    assert "Table I, k = 4" in text and "Table II" not in text
    for row in ("| FT (n=1) |", "| SP (n=1) |", "| PCT (n=1) |", "| MPT (n=1) |"):
        assert row in text
    assert "| Method | DE | EN | Avg. | trained params | updates |" in text  # XNLI's column order
    mpt = json.load(open(os.path.join(out, "k4", "mpt", "seed1", "result.json")))
    assert mpt["last_num_updates"] == 3 and mpt["k_shot"] == 4 and mpt["trained_params"] > 0  # the equal budget
    assert set(mpt["accuracy"]) == {"en", "de"}
    assert os.path.exists(os.path.join(out, "results.md"))
    assert sorted(f for f in os.listdir(os.path.join(out, "k4", "mpt", "seed1")) if f.endswith(".pt")) == \
        ["checkpoint_best.pt"]  # evaluated: the resume checkpoints are gone
    # a second invocation skips the finished seed-1 runs and adds seed 2: Table II gets p-values;
    # "w/o MPT framework" is SP's configuration, whose runs are reused
    main(common + ["--seeds", "1,2", "--methods", "MPT", "--ablations", "w/o MPT framework"])
    text = capsys.readouterr().out
    assert text.count(": training") == 2 and "k=4 MPT seed 2: training" in text and "k=4 SP seed 2: training" in text
    row = next(line for line in text.splitlines() if line.startswith("| w/o MPT framework (n=2)"))
    assert row.split("|")[-4].strip() not in ("", "-")  # a p-value against MPT
    assert json.load(open(os.path.join(out, "k4", "mpt", "seed1", "result.json"))) == mpt  # untouched


def test_mpt_compare_help_and_dry_run(setup, tmp_path, capsys):
    from fairseq_plm.recipes.mpt_compare import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--data", "--plm", "--minutes", "--max-update", "--shots", "--seeds"):
        assert flag in text
    main(["--data", compare_data(setup), "--plm", setup["plm"], "--out", str(tmp_path / "o"), "--minutes", "5",
          "--dry-run", "--verbalizer", setup["verbalizer"]])
    trains = [line for line in capsys.readouterr().out.splitlines() if "fairseq-train" in line]
    assert len(trains) == 3 * 4 * 3 + 3 * 3  # Table I: 3 k x 4 systems x 3 seeds; Table II: 3 ablations x 3 seeds
    assert all("--stop-time-hours 0.083333" in t for t in trains)
    assert sum("--arch mpt_pct" in t for t in trains) == 9 and sum("parallel_task.tsv" in t for t in trains) == 3
    with pytest.raises(SystemExit):
        main(["--data", "x", "--plm", "y", "--out", "z"])
    assert "give a budget per run" in capsys.readouterr().err

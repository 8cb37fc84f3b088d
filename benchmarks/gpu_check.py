#!/usr/bin/env python
"""The GPU check behind ``benchmarks/gpu_check.sh`` (which prepares the Python environment and
runs this): every method's tiny end-to-end train + generate, then the speed benchmarks at true
shapes, then a profile; figures and logs under OUTDIR.

    python benchmarks/gpu_check.py OUTDIR                  # on a GPU: fp16 and amp runs, true shapes
    python benchmarks/gpu_check.py OUTDIR --device cpu     # dry run: fp32, tiny shapes (CI)

Writes three files, OUTDIR/summary.md (the tables, human-readable), OUTDIR/results.json (every
figure and every run's status) and OUTDIR/logs.tar.gz (each command's output); scratch data
go to --work (default: a temporary directory). Exits non-zero if any run failed. Nothing needs the network: the tiny data are synthetic, the PLMs random.

1. end to end (in parallel, several processes): for each precision (GPU: ``--fp16`` and
   ``--amp``; CPU: fp32) MSP (``--arch msp``; the amp run with ``--output-shortlist auto``),
   SGA (``--arch sga``), deep fusion (``--arch deep_fusion``) and MPT (``--arch mpt`` with a
   parallel corpus) are trained for a few updates through ``python -m fairseq_plm.cli train``
   and decode / evaluate their test sets; a run passes when it exits 0, its losses are finite
   and every test sentence gets an output.
2. benchmarks (one at a time), stopping when ``--budget-minutes`` would be exceeded:
   bench_msp (MSP vs single-stage, full vocabulary and a 30K output shortlist, mGPT shape),
   bench_sga (SGA vs MSP at batch 1, XLM-R base shape, with and without the shortlist),
   bench_backbone (ours vs transformers, mGPT and XLM-R base shapes), bench_fusion (deep
   fusion vs Transformer-base, mBERT shape), profile_hotpaths (true shapes).
"""

import argparse
import json
import math
import os
import random
import re
import shlex
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)


def say(msg):
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Runner:
    """Runs commands with the package importable, logs each to OUT/logs/NAME.log."""

    def __init__(self, out, threads):
        self.logs = os.path.join(out, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
            OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore", PYTHONUNBUFFERED="1")

    def run(self, name, argv, timeout=900):
        t = time.time()
        with open(os.path.join(self.logs, f"{name}.log"), "w") as log:
            log.write("$ " + " ".join(shlex.quote(str(a)) for a in argv) + "\n")
            log.flush()
            try:
                p = subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env=self.env, cwd=REPO, timeout=timeout)
                text, rc = p.stdout, p.returncode
            except subprocess.TimeoutExpired as e:
                text, rc = (e.stdout or "") if isinstance(e.stdout, str) else "", "timeout"
            log.write(text)
        return {"rc": rc, "seconds": round(time.time() - t, 1), "output": text}

    def cli(self, name, command, *args, timeout=900):
        return self.run(name, [sys.executable, "-m", "fairseq_plm.cli", command, *args], timeout=timeout)


# ------------------------------------------------------------------ tiny data (synthetic)

EN = ["open", "save", "close", "file", "folder", "the", "all", "new", "window", "print", "copy", "paste", "delete",
      "settings", "user", "name", "show", "hide", "page", "search", "error", "message", "cannot", "find", "select",
      "import", "export", "image", "text", "help", "edit", "view", "tools", "add", "remove", "list", "default"]


def german(word):
    """A deterministic made-up translation of a word (the models only need a learnable mapping)."""
    return {"the": "die", "all": "alle", "new": "neu", "open": "öffnen", "save": "speichern"}.get(
        word, word[::-1] + "en")


def write_corpus(raw, n_train=160, n_valid=12, n_test=13, seed=0):
    rng = random.Random(seed)
    os.makedirs(raw, exist_ok=True)
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        src = [" ".join(rng.choice(EN) for _ in range(rng.randint(2, 7))) for _ in range(n)]
        with open(os.path.join(raw, f"{split}.en"), "w") as fe, open(os.path.join(raw, f"{split}.de"), "w") as fd:
            for s in src:
                fe.write(s.capitalize() + "\n")
                fd.write(" ".join(german(w) for w in s.split()).capitalize() + "\n")


def train_spm(files, prefix, vocab_size, t5_layout):
    import sentencepiece as spm

    kw = dict(pad_id=0, eos_id=1, unk_id=2, bos_id=-1) if t5_layout else {}
    spm.SentencePieceTrainer.train(input=",".join(files), model_prefix=prefix, vocab_size=vocab_size,
                                   model_type="unigram", character_coverage=1.0, minloglevel=2, **kw)
    return prefix + ".model"


def tiny_plms(root, raw):
    """Tiny random PLMs in HuggingFace format: GPT (mT5 ids), XLM-R, mBERT (WordPiece)."""
    import sentencepiece as spm

    from fairseq_plm.plm.bert import BertEncoder
    from fairseq_plm.plm.config import PLMConfig, preset
    from fairseq_plm.plm.export import save_hf_bert, save_hf_gpt2, save_hf_roberta
    from fairseq_plm.plm.gpt import GPT

    both = [os.path.join(raw, "train.en"), os.path.join(raw, "train.de")]
    plms = {}
    model = train_spm(both, os.path.join(root, "t5spm"), 120, True)
    sp = spm.SentencePieceProcessor(model_file=model)
    cfg = PLMConfig(family="gpt2", vocab_size=sp.GetPieceSize() + 4, hidden_size=32, num_layers=2, num_heads=4,
                    intermediate_size=64, max_positions=256, activation="gelu_new", pad_token_id=0)
    plms["gpt"] = os.path.join(root, "plm-gpt")
    save_hf_gpt2(GPT(cfg).init_random(0), plms["gpt"], model)
    model = train_spm(both, os.path.join(root, "xspm"), 120, False)
    sp = spm.SentencePieceProcessor(model_file=model)
    cfg = preset("xlmr-base", vocab_size=sp.GetPieceSize() + 2, hidden_size=32, num_layers=2, num_heads=4,
                 intermediate_size=64)
    plms["xlmr"] = os.path.join(root, "plm-xlmr")
    save_hf_roberta(BertEncoder(cfg).init_random(0), plms["xlmr"], model)
    chars = sorted({c for f in both for c in open(f, encoding="utf-8").read() if not c.isspace()})
    words = sorted({w for f in both for w in open(f, encoding="utf-8").read().split()})
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(5)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list(dict.fromkeys(chars + ["##" + c for c in chars] + words))
    vocab_txt = os.path.join(root, "vocab.txt")
    with open(vocab_txt, "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    cfg = preset("mbert", vocab_size=len(vocab), hidden_size=32, num_layers=4, num_heads=4, intermediate_size=64,
                 max_positions=128)
    plms["mbert"] = os.path.join(root, "plm-mbert")
    save_hf_bert(BertEncoder(cfg).init_random(0), plms["mbert"], vocab_txt)
    return plms


def encode(plm_or_spm, src, dst):
    from fairseq_plm.plm.vocab import make_encoder

    enc = make_encoder(plm_or_spm)
    with open(src, encoding="utf-8") as fin, open(dst, "w", encoding="utf-8") as fout:
        for line in fin:
            fout.write(" ".join(enc(line.strip())) + "\n")


def build_data(root, runner):
    """raw text, PLMs, binarized data for every method; returns paths."""
    raw = os.path.join(root, "raw")
    write_corpus(raw)
    plms = tiny_plms(root, raw)
    jobs, paths = [], {"raw": raw, **{f"plm_{k}": v for k, v in plms.items()}}
    for name in ("gpt", "xlmr"):
        tok, data = os.path.join(root, f"tok-{name}"), os.path.join(root, f"data-{name}")
        os.makedirs(tok, exist_ok=True)
        for s in ("train", "valid", "test"):
            for lang in ("en", "de"):
                encode(plms[name], os.path.join(raw, f"{s}.{lang}"), os.path.join(tok, f"{s}.{lang}"))
        jobs.append((f"preprocess-{name}", ["preprocess", "--task", "plm_translation", "-s", "en", "-t", "de",
                                           "--trainpref", f"{tok}/train", "--validpref", f"{tok}/valid",
                                           "--testpref", f"{tok}/test", "--srcdict", plms[name], "--tgtdict",
                                           plms[name], "--destdir", data, "--workers", "1"]))
        paths[f"data_{name}"] = data
    # deep fusion: English in mBERT's WordPiece, German in its own sentencepiece vocabulary
    tok, data = os.path.join(root, "tok-fusion"), os.path.join(root, "data-fusion")
    os.makedirs(tok, exist_ok=True)
    nmt = train_spm([os.path.join(raw, "train.de")], os.path.join(root, "nmt"), 80, True)
    for s in ("train", "valid", "test"):
        encode(plms["mbert"], os.path.join(raw, f"{s}.en"), os.path.join(tok, f"{s}.en"))
        encode(nmt, os.path.join(raw, f"{s}.de"), os.path.join(tok, f"{s}.de"))
    jobs.append(("preprocess-fusion", ["preprocess", "--task", "fusion_translation", "-s", "en", "-t", "de",
                                       "--trainpref", f"{tok}/train", "--validpref", f"{tok}/valid",
                                       "--testpref", f"{tok}/test", "--srcdict", plms["mbert"], "--nwordstgt",
                                       "30000", "--destdir", data, "--workers", "1"]))
    paths["data_fusion"] = data
    # MPT: synthetic NLI + a parallel corpus on its own tiny XLM-R (single-token label words)
    from fairseq_plm.data.nli import write_tsv
    from fairseq_plm.recipes.mpt_data import SET_A, synthetic_example, synthetic_nli, synthetic_parallel

    mroot = os.path.join(root, "mpt")
    paths["data_mpt"] = synthetic_nli(os.path.join(mroot, "data"), n_train=36, n_valid=12, n_test=24)
    paths["parallel_mpt"] = os.path.join(mroot, "parallel.tsv")
    write_tsv(paths["parallel_mpt"], synthetic_parallel(n=36))
    rng = random.Random(0)
    with open(os.path.join(mroot, "spm.txt"), "w") as f:
        for i in range(3000):
            e = synthetic_example(rng, i % 3, "en" if i % 2 else "de")
            f.write(f"{e['premise']}. {e['hypothesis']}?\n")
    import sentencepiece as spm

    from fairseq_plm.plm.bert import BertEncoder
    from fairseq_plm.plm.config import preset
    from fairseq_plm.plm.export import save_hf_roberta

    model = train_spm([os.path.join(mroot, "spm.txt")], os.path.join(mroot, "xspm"), 85, False)
    sp = spm.SentencePieceProcessor(model_file=model)
    cfg = preset("xlmr-base", vocab_size=sp.GetPieceSize() + 2, hidden_size=32, num_layers=2, num_heads=4,
                 intermediate_size=64)
    paths["plm_mpt"] = os.path.join(mroot, "plm")
    save_hf_roberta(BertEncoder(cfg).init_random(0), paths["plm_mpt"], model)
    words = [w for w in SET_A if len(sp.EncodeAsPieces(w)) == 1][:3]
    paths["verbalizer"] = f"entailment:{words[0]},neutral:{words[1]},contradiction:{words[2]}"
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda j: runner.cli(j[0], *j[1]), jobs))
    for (name, _), r in zip(jobs, results):
        if r["rc"] != 0:
            raise SystemExit(f"[gpu_check] {name} failed; see {runner.logs}/{name}.log")
    return paths


# ------------------------------------------------------------------ end to end

COMMON = ["--optimizer", "adam", "--no-progress-bar", "--log-format", "simple", "--log-interval", "1", "--seed", "1",
          "--no-epoch-checkpoints"]


def e2e_runs(paths, precision, device, work):
    """(name, [(step name, cli command, args)], check) per method for one precision."""
    cpu = ["--cpu"] if device == "cpu" else []
    prec = ([] if precision == "fp32" else [f"--{precision}"]) + (
        ["--max-update", "2", "--disable-validation"] if device == "cpu" else ["--max-update", "4"])
    gen_prec = ["--fp16"] if precision == "fp16" else []
    runs = []

    def save(m):
        return os.path.join(work, f"{m}-{precision}")

    shortlist = ["--output-shortlist", "auto"] if precision in ("amp", "fp32") else []
    runs.append(("msp", [
        ("train", "train", [paths["data_gpt"], "--plm", paths["plm_gpt"], "--task", "plm_translation", "--arch", "msp",
                            "--prompt-length", "4", "--lr", "0.01", "--max-tokens", "1000", "--criterion",
                            "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--save-dir", save("msp"),
                            *shortlist, *COMMON, *cpu, *prec]),
        ("generate", "generate", [paths["data_gpt"], "--path", os.path.join(save("msp"), "checkpoint_last.pt"),
                                  "--task", "plm_translation", "--beam", "2", "--max-len-a", "0", "--max-len-b", "8",
                                  "--batch-size", "8", *cpu, *gen_prec])]))
    runs.append(("sga", [
        ("train", "train", [paths["data_xlmr"], "--plm", paths["plm_xlmr"], "--task", "plm_translation", "--arch",
                            "sga", "--prompt-length", "4", "--lr", "0.005", "--max-tokens", "1000", "--criterion",
                            "plm_nat_loss", "--save-dir", save("sga"), *COMMON, *cpu, *prec]),
        ("generate", "generate", [paths["data_xlmr"], "--path", os.path.join(save("sga"), "checkpoint_last.pt"),
                                  "--task", "plm_translation", "--iter-decode-max-iter", "2", "--batch-size", "8",
                                  *cpu, *gen_prec])]))
    runs.append(("fusion", [
        ("train", "train", [paths["data_fusion"], "--plm", paths["plm_mbert"], "--task", "fusion_translation",
                            "--arch", "deep_fusion", "--criterion", "deep_fusion_loss", "--decoder-embed-dim", "32",
                            "--decoder-ffn-embed-dim", "64", "--decoder-attention-heads", "4", "--lr", "0.001",
                            "--max-tokens", "400", "--save-dir", save("fusion"), *COMMON, *cpu, *prec]),
        ("generate", "generate", [paths["data_fusion"], "--path", os.path.join(save("fusion"), "checkpoint_last.pt"),
                                  "--task", "fusion_translation", "--beam", "2", "--max-tokens", "400",
                                  "--max-len-a", "0", "--max-len-b", "8",
                                  "--remove-bpe", "sentencepiece", *cpu, *gen_prec])]))
    runs.append(("mpt", [
        ("train", "train", [paths["data_mpt"], "--task", "mpt_nli", "--plm", paths["plm_mpt"], "--verbalizer",
                            paths["verbalizer"], "--criterion", "mpt_loss", "--arch", "mpt", "--parallel-data",
                            paths["parallel_mpt"], "--lr", "1e-3", "--batch-size", "12", "--save-dir", save("mpt"),
                            "--best-checkpoint-metric", "accuracy", "--maximize-best-checkpoint-metric",
                            *COMMON, *cpu, *prec]),
        ("evaluate", "mpt-eval", ["--path", os.path.join(save("mpt"), "checkpoint_last.pt"), "--langs", "en,de",
                                  "--name", "MPT", "--json", os.path.join(save("mpt"), "eval.json"), *cpu])]))
    return runs


def check_e2e(method, steps):
    """Pass/fail and the figures of one method's run."""
    train, last = steps[0][1], steps[-1][1]
    info = {"train_seconds": train["seconds"], "decode_seconds": last["seconds"]}
    if train["rc"] != 0 or last["rc"] != 0:
        bad = steps[0] if train["rc"] != 0 else steps[-1]
        return False, {**info, "error": f"{bad[0]} exited {bad[1]['rc']}: " + bad[1]["output"].strip()[-400:]}
    losses = [float(x) for line in train["output"].splitlines() if "num_updates" in line and "valid" not in line
              for x in re.findall(r"\| loss ([^\s|]+)", line)]
    info["train_loss"] = losses[-1] if losses else None
    if not losses or not all(math.isfinite(x) for x in losses):
        return False, {**info, "error": f"train loss not finite: {losses}"}
    if method == "mpt":
        ok = "| MPT |" in last["output"]
        return ok, {**info, "eval": last["output"].strip().splitlines()[-3:]}
    hyps = re.findall(r"^H-(\d+)\t", last["output"], flags=re.M)
    info["hypotheses"] = len(hyps)
    ok = sorted(int(h) for h in hyps) == list(range(13))
    return ok, info if ok else {**info, "error": f"{len(hyps)} of 13 test sentences translated"}


def run_e2e(paths, runner, device, work, parallel):
    precisions = ["fp32"] if device == "cpu" else ["fp16", "amp"]
    jobs = [(m, p, steps) for p in precisions for m, steps in e2e_runs(paths, p, device, work)]

    def do(job):
        method, precision, steps = job
        done = []
        for step, command, args in steps:
            r = runner.cli(f"e2e-{method}-{precision}-{step}", command, *args)
            done.append((step, r))
            if r["rc"] != 0:
                break
        while len(done) < len(steps):
            done.append((steps[len(done)][0], {"rc": "skipped", "seconds": 0, "output": ""}))
        ok, info = check_e2e(method, done)
        say(f"  e2e {method} {precision}: {'ok' if ok else 'FAILED'} ({info.get('error', '')[:120]})")
        return {"method": method, "precision": precision, "ok": ok, **info}

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(do, jobs))


# ------------------------------------------------------------------ benchmarks

def bench_plan(device):
    """(name, script, args, estimated minutes on the device) in priority order."""
    if device == "cpu":  # dry run: toy shapes, one repeat each
        t = ["--layers", "2", "--hidden", "64", "--heads", "4", "--vocab", "2000", "--prompt-length", "8"]
        return [
            ("msp", "bench_msp.py", t + ["--batch", "2", "--src-len", "6", "--tgt-len", "5", "--repeats", "1",
                                         "--output-shortlist", "300"], 1),
            ("sga", "bench_sga.py", t + ["--sentences", "2", "--src-len", "6", "--tgt-len", "5", "--repeats", "1",
                                         "--output-shortlist", "300", "--skip-adaptive"], 1),
            ("backbone", "bench_backbone.py", ["--layers", "2", "--hidden", "32", "--heads", "4", "--seq-len", "8",
                                               "--batch", "2", "--prefix-len", "4", "--vocab", "300", "--repeats",
                                               "2", "--warmup", "1"], 1),
            ("fusion", "bench_fusion.py", ["--tiny", "--m", "1", "2", "--sentences", "1", "--repeats", "1",
                                           "--batch", "2", "--train-repeats", "1", "--train-m", "1", "--src-len", "5",
                                           "--tgt-len", "4"], 1),
            ("profile", "profile_hotpaths.py", ["--shape", "tiny", "--steps", "1", "--top", "5"], 1),
        ]
    d = ["--device", "cuda"]
    return [
        ("msp", "bench_msp.py", d + ["--preset", "mgpt", "--dtype", "float16", "--batch", "16", "--src-len", "24",
                                     "--tgt-len", "24", "--repeats", "3", "--output-shortlist", "30000"], 2.0),
        ("sga", "bench_sga.py", d + ["--preset", "xlmr-base", "--dtype", "float16", "--sentences", "10",
                                     "--repeats", "2", "--output-shortlist", "30000", "--skip-adaptive"], 1.5),
        ("backbone-mgpt", "bench_backbone.py", d + ["--preset", "mgpt", "--family", "gpt2", "--dtype", "float16",
                                                    "--batch", "8", "--seq-len", "128", "--prefix-len", "64",
                                                    "--repeats", "20", "--warmup", "3"], 1.5),
        ("backbone-xlmr", "bench_backbone.py", d + ["--preset", "xlmr-base", "--family", "xlmr", "--dtype",
                                                    "float16", "--batch", "8", "--seq-len", "128", "--prefix-len",
                                                    "64", "--repeats", "20", "--warmup", "3"], 1.0),
        ("fusion", "bench_fusion.py", d + ["--dtype", "float16", "--sentences", "4", "--repeats", "2", "--batch",
                                           "32", "--train-repeats", "3"], 1.5),
        ("profile", "profile_hotpaths.py", d + ["--shape", "true", "--dtype", "float16", "--steps", "2"], 1.5),
    ]


def run_benchmarks(runner, out, device, deadline):
    results = []
    for name, script, args, minutes in bench_plan(device):
        if time.time() + minutes * 60 > deadline:
            say(f"  bench {name}: skipped (time budget)")
            results.append({"name": name, "ok": None, "skipped": "time budget"})
            continue
        js = os.path.join(runner.logs, f"bench-{name}.json")
        r = runner.run(f"bench-{name}", [sys.executable, os.path.join(HERE, script), *args, "--json", js])
        entry = {"name": name, "ok": r["rc"] == 0, "seconds": r["seconds"],
                 "command": f"python benchmarks/{script} " + " ".join(shlex.quote(a) for a in args)}
        if os.path.exists(js):
            with open(js) as f:
                entry["figures"] = json.load(f)
        entry["table"] = "\n".join(line for line in r["output"].splitlines()
                                   if line.startswith(("|", "#", "##")) and "Warning" not in line)
        if r["rc"] != 0:
            entry["error"] = r["output"].strip()[-600:]
        say(f"  bench {name}: {'ok' if entry['ok'] else 'FAILED'} ({r['seconds']} s)")
        results.append(entry)
    return results


# ------------------------------------------------------------------ main

def environment():
    import torch

    env = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if env["cuda"]:
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda_version"] = torch.version.cuda
    for mod in ("fairseq", "numpy", "transformers", "sentencepiece"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            env[mod] = f"unavailable ({type(e).__name__})"
    return env


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="output directory (created)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="skip benchmarks that would end later (default: 9.5 on cuda, none for the cpu dry run)")
    p.add_argument("--parallel", type=int, default=None, help="end-to-end runs at a time (default: 4 cuda, 2 cpu)")
    p.add_argument("--skip-benchmarks", action="store_true")
    p.add_argument("--work", help="scratch directory for data, checkpoints and logs (default: a new temporary "
                                  "one, removed at the end); OUTDIR itself receives three files only")
    args = p.parse_args(argv)
    t0 = time.time()
    budget = args.budget_minutes if args.budget_minutes is not None else (9.5 if args.device == "cuda" else None)
    deadline = t0 + budget * 60 if budget else float("inf")
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    env = environment()
    say(f"environment: {env}")
    if args.device == "cuda" and not env["cuda"]:
        raise SystemExit("[gpu_check] no CUDA device visible to torch; run with --device cpu for a dry run")
    import shutil
    import tempfile

    work = os.path.abspath(args.work) if args.work else tempfile.mkdtemp(prefix="gpu_check_")
    os.makedirs(work, exist_ok=True)
    runner = Runner(work, threads=2)
    say("1/3 tiny data and PLMs")
    paths = build_data(work, runner)
    say("2/3 end to end: train + generate of every method")
    e2e = run_e2e(paths, runner, args.device, work, args.parallel or (4 if args.device == "cuda" else 2))
    bench = []
    if not args.skip_benchmarks:
        say("3/3 benchmarks")
        bench = run_benchmarks(runner, out, args.device, deadline)
    results = {"environment": env, "device": args.device, "minutes": round((time.time() - t0) / 60, 2),
               "e2e": e2e, "benchmarks": bench}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    lines = [f"# gpu_check ({args.device}), {time.strftime('%Y-%m-%d %H:%M')}, {results['minutes']} min",
             "", f"environment: {json.dumps(env)}", "", "## end to end (train + generate)", "",
             "| method | precision | ok | train s | decode s | last train loss | note |", "|---|---|---|---|---|---|---|"]
    for r in e2e:
        lines.append(f"| {r['method']} | {r['precision']} | {'yes' if r['ok'] else 'NO'} | {r['train_seconds']} | "
                     f"{r['decode_seconds']} | {r.get('train_loss')} | {r.get('error', '')[:200]} |")
    for b in bench:
        lines += ["", f"## {b['name']}", ""]
        if b.get("skipped"):
            lines.append(f"skipped ({b['skipped']})")
            continue
        lines += [f"command: `{b['command']}` ({b['seconds']} s)", "", b.get("table", "")]
        if b.get("error"):
            lines += ["", "```", b["error"], "```"]
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with tarfile.open(os.path.join(out, "logs.tar.gz"), "w:gz") as tar:
        tar.add(runner.logs, arcname="logs")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    failed = [f"e2e {r['method']} {r['precision']}" for r in e2e if not r["ok"]]
    failed += [f"bench {b['name']}" for b in bench if b.get("ok") is False]
    say(f"done in {results['minutes']} min: {out}/summary.md, results.json, logs.tar.gz"
        + (f"; FAILED: {', '.join(failed)}" if failed else "; all passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

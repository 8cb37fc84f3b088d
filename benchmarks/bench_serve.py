#!/usr/bin/env python
"""Load test of fairseq-plm-serve, and memory of one PLM serving three prompt sets.

Throughput: ``fairseq-plm-serve`` with three MSP directions on one frozen GPT, on 127.0.0.1;
``--clients`` concurrent client threads send ``--requests`` requests of ``--texts-per-request``
test sentences each, (a) all in one direction, (b) round-robin over the three. Reported:
texts/s, p50/p99 request latency, mean texts per batch (from /health, to show both ran at the
same batch size). The scenarios alternate ``--repeats`` times; medians are reported.
Target: mixed-direction throughput >= 0.9x single-direction at the same batch size.

Memory: fresh processes that load (a) nothing, (b) one direction, (c) three directions with the
shared PLM, (d) three directions with sharing off (three PLM copies), and translate a few
sentences; resident memory (VmRSS) and peak (max RSS) per process.
Target: (c) <= 1.1 x ((b) + the other two directions' prompt bytes).

Without ``--plm``/``--direction`` the benchmark builds its own set-up in ``--work``: a gettext
En-De corpus, a sentencepiece model, a random GPT of ``--layers``/``--hidden``/``--heads`` in
HF format, and three MSP En-De prompt sets trained for ``--train-updates`` updates with seeds 3,
4 and 5. Reused when ``--work`` already holds them. Different prompt sets may produce outputs of
different lengths (reported); ``--identical-directions`` serves the first one under three names
(three loaded copies), so both scenarios do the same work and only the cost of mixing differs.

    python benchmarks/bench_serve.py                                   # tiny: runs in minutes on 2 cores
    python benchmarks/bench_serve.py --layers 12 --hidden 768 --heads 12 --prompt-length 128 \\
        --work /tmp/bench_serve_base --requests 400 --clients 16 --texts-per-request 4 --repeats 3
    python benchmarks/bench_serve.py --plm PLM --direction de=A.pt --direction ro=B.pt --direction zh=C.pt
"""

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


# ------------------------------------------------------------------ set-up

def build_setup(args):
    from fairseq_plm.recipes.common import encode_and_binarize, run_cli

    work = os.path.abspath(args.work)
    raw, plm, tok, data = (os.path.join(work, d) for d in ("raw", "plm", "tok", "data-bin"))
    # three En-De prompt sets (seeds 3, 4, 5): equally long outputs keep the single/mixed
    # comparison about batching (the mean output length is reported too)
    names = {f"en-de.{i}": ("en", "de", 2 + i) for i in (1, 2, 3)}
    ckpts = {n: os.path.join(work, "ckpt", n, "checkpoint_last.pt") for n in names}
    if all(os.path.exists(c) for c in ckpts.values()):
        if args.identical_directions:  # the first prompt set under three names (three loaded copies)
            ckpts = {n: ckpts["en-de.1"] for n in ckpts}
        return plm, ckpts, os.path.join(raw, "test.en")
    import sentencepiece as spm

    from fairseq_plm.data.gettext_corpus import read_catalogs, split_pairs, write_splits
    from fairseq_plm.plm.config import PLMConfig
    from fairseq_plm.plm.export import save_hf_gpt2
    from fairseq_plm.plm.gpt import GPT

    os.makedirs(work, exist_ok=True)
    splits = split_pairs(read_catalogs("de"), valid=50, test=200)
    splits["train"] = splits["train"][:args.train_sentences]
    write_splits(splits, raw)
    prefix = os.path.join(work, "spm")
    spm.SentencePieceTrainer.train(input=f"{raw}/train.en,{raw}/train.de", model_prefix=prefix,
                                   vocab_size=args.vocab, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   model_type="unigram", character_coverage=1.0, minloglevel=2)
    sp = spm.SentencePieceProcessor()
    sp.Load(prefix + ".model")
    cfg = PLMConfig(family="gpt2", vocab_size=sp.GetPieceSize(), hidden_size=args.hidden, num_layers=args.layers,
                    num_heads=args.heads, intermediate_size=4 * args.hidden, max_positions=512,
                    activation="gelu_new", pad_token_id=0)
    save_hf_gpt2(GPT(cfg).init_random(1), plm, prefix + ".model")
    encode_and_binarize(raw, plm, tok, data)
    for name, (s, t, seed) in names.items():
        run_cli("fairseq-plm-train", data, "--plm", plm, "--task", "plm_translation", "-s", s, "-t", t,
                "--arch", "msp", "--prompt-length", str(args.prompt_length), "--criterion",
                "label_smoothed_cross_entropy", "--optimizer", "adam", "--lr", "0.01", "--max-tokens", "1000",
                "--max-update", str(args.train_updates), "--seed", str(seed), "--cpu", "--no-progress-bar",
                "--disable-validation", "--no-epoch-checkpoints", "--no-save-optimizer-state",
                "--save-dir", os.path.dirname(ckpts[name]))
    return build_setup(args)


# ------------------------------------------------------------------ memory

def memory_child(spec):
    """Runs in a fresh process: load the directions, translate, report memory."""
    import torch

    from fairseq_plm import Translator
    from fairseq_plm.plm import shared

    torch.set_num_threads(1)
    out = {"baseline_rss_mb": _rss_mb()}
    with shared.sharing(spec["share"]):
        t = Translator(plm=spec["plm"], device="cpu")
        for name, ckpt in spec["directions"].items():
            t.add_direction(name, ckpt, beam=2, max_len_b=20)
    for name in t.directions:
        t.translate(spec["sentences"], name)
    plms = {id(t.direction(n).model.plm): t.direction(n).model.plm for n in t.directions}
    prompt_bytes = {n: sum(p.numel() * p.element_size() for k, p in t.direction(n).model.named_parameters()
                           if ".plm." not in f".{k}") for n in t.directions}
    out.update(rss_mb=_rss_mb(), max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               plm_instances=len(plms), prompt_bytes=prompt_bytes,
               plm_bytes=sum(p.numel() * p.element_size() for m in plms.values() for p in m.parameters()))
    print(json.dumps(out))


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure_memory(plm, ckpts, sentences):
    names = list(ckpts)
    cases = [("one direction", names[:1], True), ("three directions, one shared PLM", names, True),
             ("three directions, sharing off", names, False)]
    rows = []
    for label, which, share in cases:
        spec = {"plm": plm, "directions": {n: ckpts[n] for n in which}, "share": share, "sentences": sentences[:8]}
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-child", json.dumps(spec)],
                           capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        if p.returncode != 0:
            raise RuntimeError(p.stderr[-3000:])
        rows.append((label, json.loads(p.stdout.strip().splitlines()[-1])))
    return rows


def print_memory(rows):
    print("| process | PLM instances | PLM MB | prompt MB | VmRSS MB | max RSS MB | RSS - baseline MB |")
    print("|---|---|---|---|---|---|---|")
    for label, r in rows:
        prompts = sum(r["prompt_bytes"].values()) / 2 ** 20
        print(f"| {label} | {r['plm_instances']} | {r['plm_bytes'] / 2 ** 20:.1f} | {prompts:.2f} | "
              f"{r['rss_mb']:.0f} | {r['max_rss_mb']:.0f} | {r['rss_mb'] - r['baseline_rss_mb']:.0f} |")
    one, shared_, separate = (r for _, r in rows)
    others = sum(v for n, v in shared_["prompt_bytes"].items() if n not in one["prompt_bytes"]) / 2 ** 20
    bound = 1.1 * (one["rss_mb"] + others)
    print(f"# three directions on one PLM: {shared_['rss_mb']:.0f} MB vs one model + the other prompts "
          f"{one['rss_mb'] + others:.0f} MB: ratio {shared_['rss_mb'] / (one['rss_mb'] + others):.3f} "
          f"(target <= 1.1, i.e. <= {bound:.0f} MB); three separate models: {separate['rss_mb']:.0f} MB")


# ------------------------------------------------------------------ throughput

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, payload):
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def get(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read())


def load(url, requests, clients):
    """Send ``requests`` [(texts, direction)] from ``clients`` threads; (wall s, latencies s)."""
    latencies = [None] * len(requests)
    words = [None] * len(requests)
    nxt = iter(range(len(requests)))
    lock = threading.Lock()

    def client():
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            texts, direction = requests[i]
            t0 = time.perf_counter()
            out = post(url + "/translate", {"texts": texts, "direction": direction})
            latencies[i] = time.perf_counter() - t0
            assert len(out["translations"]) == len(texts)
            words[i] = sum(len(t.split()) for t in out["translations"]) / len(texts)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - t0, latencies, statistics.mean(words)


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def measure_throughput(args, plm, ckpts, sentences):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "fairseq_plm.cli.serve", "--port", str(port), "--plm", plm, "--beam", str(args.beam),
           "--max-len-a", "1.2", "--max-len-b", "10", "--max-batch-texts", str(args.max_batch_texts),
           "--batch-window-ms", str(args.batch_window_ms), "--max-queue-texts", "100000",
           "--max-texts", str(args.texts_per_request)]
    cmd += ["--cpu"] if args.device == "cpu" else []
    for name, ckpt in ckpts.items():
        cmd += ["--direction", f"{name}={ckpt}"]
    server = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 600
        while True:
            if server.poll() is not None:
                raise RuntimeError(server.stderr.read()[-3000:])
            try:
                get(url + "/health")
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        names = list(ckpts)
        k = args.texts_per_request

        def make(mixed):
            return [([sentences[(i * k + j) % len(sentences)] for j in range(k)],
                     names[i % len(names)] if mixed else names[0]) for i in range(args.requests)]

        load(url, make(True)[:max(4, args.clients)], args.clients)  # warm-up
        results = {"one direction": [], "mix of three": []}
        for _ in range(args.repeats):
            for label in results:
                before = get(url + "/health")["stats"]
                wall, lat, out_words = load(url, make(label == "mix of three"), args.clients)
                after = get(url + "/health")["stats"]
                texts = after["texts"] - before["texts"]
                results[label].append({"texts_per_s": texts / wall, "p50_ms": 1000 * percentile(lat, 50),
                                       "p99_ms": 1000 * percentile(lat, 99),
                                       "texts_per_batch": texts / max(1, after["batches"] - before["batches"]),
                                       "output_words": out_words})
    finally:
        server.terminate()
        server.wait(timeout=60)
    return results


def print_throughput(args, results):
    print(f"# {args.requests} requests x {args.texts_per_request} texts, {args.clients} clients, beam {args.beam}, "
          f"--max-batch-texts {args.max_batch_texts}, --batch-window-ms {args.batch_window_ms}, "
          f"median of {args.repeats}")
    print("| scenario | texts/s | p50 latency ms | p99 latency ms | texts per batch | output words per text |")
    print("|---|---|---|---|---|---|")
    med = {}
    for label, runs in results.items():
        med[label] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        m = med[label]
        print(f"| {label} | {m['texts_per_s']:.2f} | {m['p50_ms']:.0f} | {m['p99_ms']:.0f} | "
              f"{m['texts_per_batch']:.1f} | {m['output_words']:.1f} |")
    ratio = med["mix of three"]["texts_per_s"] / med["one direction"]["texts_per_s"]
    print(f"| **mixed / single** | **{ratio:.3f}** (target >= 0.9) | | | | |")


# ------------------------------------------------------------------ main

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "fairseq_plm_bench_serve"),
                   help="set-up directory (built once, then reused)")
    p.add_argument("--plm", help="an existing PLM directory (with --direction)")
    p.add_argument("--direction", action="append", default=[], metavar="NAME=CHECKPOINT")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=1000)
    p.add_argument("--prompt-length", type=int, default=16)
    p.add_argument("--train-sentences", type=int, default=400)
    p.add_argument("--train-updates", type=int, default=2)
    p.add_argument("--requests", type=int, default=40)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--texts-per-request", type=int, default=2)
    p.add_argument("--max-batch-texts", type=int, default=16)
    p.add_argument("--batch-window-ms", type=float, default=5.0)
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--identical-directions", action="store_true",
                   help="serve one prompt set under three names: equal outputs isolate the cost of mixing")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        return memory_child(json.loads(args.memory_child))
    import torch

    if args.plm or args.direction:
        if not (args.plm and len(args.direction) == 3):
            p.error("--plm needs three --direction NAME=CHECKPOINT")
        plm, ckpts = args.plm, dict(d.split("=", 1) for d in args.direction)
        test = None
    else:
        plm, ckpts, test = build_setup(args)
    sentences = ([line.strip() for line in open(test, encoding="utf-8") if line.strip()] if test else
                 ["Open the file", "Save all changes", "The directory is not empty", "Print the document"])
    print(f"# torch {torch.__version__}, {args.device}, {os.cpu_count()} CPUs; PLM {plm}; directions "
          f"{', '.join(ckpts)}; command: python {' '.join(sys.argv)}")
    if not args.skip_memory:
        print_memory(measure_memory(plm, ckpts, sentences))
    if not args.skip_throughput:
        print_throughput(args, measure_throughput(args, plm, ckpts, sentences))


if __name__ == "__main__":
    main()

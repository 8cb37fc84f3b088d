"""Translation quickstart: MSP on a small multilingual GPT, English -> German, on real text.

    python -m fairseq_plm.recipes.quickstart [--out quickstart_out] [--minutes 6]

1. builds an English-German corpus from this machine's gettext catalogs
   (/usr/share/locale/de/LC_MESSAGES/*.mo; deduplicated; fixed train/valid/test splits);
2. takes the small multilingual GPT shipped in examples/quickstart/tiny-mgpt (made by
   ``python -m fairseq_plm.recipes.pretrain_tiny_gpt``; re-made here if absent);
3. tokenizes with the PLM's own sentencepiece model and binarizes with ``fairseq-preprocess``;
4. trains MSP prompts (encoding, re-encoding, decoding stages) on the frozen PLM with
   ``fairseq-train --user-dir fairseq_plm --arch msp``;
5. translates the test split with ``fairseq-generate`` (beam 4, length penalty 0.0, as MSP);
6. prints sacrebleu BLEU with its signature, the copy-the-source baseline on the same split,
   and a few sample translations.
"""

import argparse
import os
import random
import re
import subprocess
import sys
import time

import fairseq_plm

from ..data.gettext_corpus import read_catalogs, split_pairs, write_splits
from .common import BIN, USER_DIR, encode_and_binarize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(fairseq_plm.__file__)))
SHIPPED_PLM = os.path.join(REPO, "examples", "quickstart", "tiny-mgpt")


def say(msg):
    print(f"[quickstart {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(name, *args, log=None, show=None):
    """Run a console script; stream the lines matching ``show`` so progress is visible."""
    cmd = [os.path.join(BIN, name), *map(str, args)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as p:
        lines = []
        for line in p.stdout:
            lines.append(line)
            if log is not None:
                log.write(line)
            if show is not None and re.search(show, line):
                print("    " + line.rstrip().split(" | ", 1)[-1] if " | " in line else "    " + line.rstrip(), flush=True)
    if p.returncode != 0:
        sys.stderr.write("".join(lines[-40:]))
        raise SystemExit(f"[quickstart] {name} failed with exit code {p.returncode}")
    return "".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "quickstart_out"))
    ap.add_argument("--plm", default=SHIPPED_PLM, help="PLM directory (HuggingFace format)")
    ap.add_argument("--minutes", type=float, default=6.0, help="prompt training time budget")
    ap.add_argument("--prompt-length", type=int, default=32)
    ap.add_argument("--test-size", type=int, default=200)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--output-shortlist", default="none", metavar="none|auto|FILE",
                    help="score only the target side's pieces in training and decoding (fairseq_plm/plm/shortlist.py); "
                         "auto: the pieces of the German training targets")
    args = ap.parse_args(argv)
    t0 = time.time()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)

    say("1/6 corpus: English-German pairs from /usr/share/locale/de/LC_MESSAGES/*.mo")
    pairs = read_catalogs("de")
    splits = split_pairs(pairs, valid=args.test_size, test=args.test_size)
    raw = os.path.join(out, "raw")
    write_splits(splits, raw)
    say(f"    {len(pairs)} unique pairs: train {len(splits['train'])}, valid {len(splits['valid'])}, "
        f"test {len(splits['test'])} (split by a hash of the English side)")

    plm = os.path.abspath(args.plm)
    if not os.path.exists(os.path.join(plm, "config.json")):
        say(f"2/6 PLM: {plm} missing, pre-training it now (recipe fairseq_plm.recipes.pretrain_tiny_gpt)")
        run("python", "-m", "fairseq_plm.recipes.pretrain_tiny_gpt", "--out", plm, "--minutes", "20",
            show=r"\[pretrain\]")
    else:
        say(f"2/6 PLM: {os.path.relpath(plm, REPO)} (small multilingual GPT, our recipe: "
            f"python -m fairseq_plm.recipes.pretrain_tiny_gpt)")

    say("3/6 tokenize with the PLM's sentencepiece model, binarize with fairseq-preprocess")
    tok, data = os.path.join(out, "tok"), os.path.join(out, "data-bin")
    encode_and_binarize(raw, plm, tok, data, workers=2)

    say(f"4/6 train MSP prompts with fairseq-train (frozen PLM; {args.minutes:g} min budget)")
    save = os.path.join(out, "checkpoints")
    with open(os.path.join(out, "train.log"), "w") as log:
        run("fairseq-train", data, "--user-dir", USER_DIR, "--task", "plm_translation", "--arch", "msp",
            "--plm", plm, "--prompt-length", args.prompt_length, "--optimizer", "adam", "--adam-betas", "(0.9,0.98)",
            "--adam-eps", "1e-9", "--lr", args.lr, "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "100",
            "--warmup-init-lr", "1e-7", "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--max-tokens", "4096", "--max-update", "100000", "--stop-time-hours", args.minutes / 60,
            "--save-dir", save, "--no-epoch-checkpoints", "--cpu", "--log-format", "simple",
            "--log-interval", "25", "--seed", "1", "--num-workers", "0", "--output-shortlist", args.output_shortlist,
            log=log, show=r"train_inner|valid on|num\. (shared )?model params")

    say("5/6 translate the test split with fairseq-generate (beam 4, length penalty 0.0)")
    gen_out = os.path.join(out, "generate-test.txt")
    with open(gen_out, "w") as f:
        f.write(run("fairseq-generate", data, "--user-dir", USER_DIR, "--task", "plm_translation",
                    "--path", os.path.join(save, "checkpoint_best.pt"), "--gen-subset", "test", "--beam", "4",
                    "--lenpen", "0.0", "--max-len-a", "1.5", "--max-len-b", "10", "--batch-size", "32", "--cpu",
                    "--bpe", "sentencepiece", "--sentencepiece-model", os.path.join(plm, "spiece.model"),
                    show=r"Translated"))

    say("6/6 BLEU (sacrebleu)")
    def score(*extra):
        text = run("fairseq-plm-score", "--generate-output", gen_out, *extra)
        return next(line for line in text.splitlines() if line.startswith("BLEU"))

    msp, copy = score(), score("--source-as-hypothesis")
    print(f"\n  MSP on tiny mGPT, En->De test ({args.test_size} sentences): {msp}")
    print(f"  copy-the-source baseline, same split:        {copy}\n")
    rows = {}
    for line in open(gen_out, encoding="utf-8"):
        m = re.match(r"^([STD])-(\d+)\t(.*)$", line.rstrip("\n"))
        if m:
            rows.setdefault(int(m.group(2)), {})[m.group(1)] = m.group(3).split("\t")[-1]
    for i in sorted(random.Random(0).sample(sorted(rows), min(5, len(rows)))):
        print(f"  SRC  {rows[i]['S']}\n  REF  {rows[i]['T']}\n  MSP  {rows[i]['D']}\n")
    say(f"done in {(time.time() - t0) / 60:.1f} min; outputs in {os.path.relpath(out, os.getcwd())}/")


if __name__ == "__main__":
    main()

"""``fairseq-plm-score``: sacrebleu BLEU (with signature) of a fairseq-generate output.

    fairseq-plm-score --generate-output gen.out [--tokenize zh] [--source-as-hypothesis]
    fairseq-plm-score --generate-output gen.out --metric rouge-l,meteor

``--metric`` (repeatable, or a comma list; default ``bleu``) picks bleu, rouge-l and/or
meteor; ROUGE-L and METEOR are means of sentence scores x100 (see
``fairseq_plm.data.generation_metrics``; they need ``pip install -r requirements-eval.txt``).

reads the ``D-`` (detokenized hypothesis) and ``T-`` (reference) lines, in sentence-id order;
``--source-as-hypothesis`` scores the ``S-`` lines instead (the copy-the-source baseline).
Plain files work too: ``--hyp FILE --ref FILE``.
"""

import argparse
import re
import sys

from ..data import generation_metrics as gm
from ..data.text_processing import bleu

METRICS = ("bleu", "rouge-l", "meteor")


def parse_metrics(values):
    """``--metric`` values (each possibly a comma list) -> ordered unique metric names."""
    names = []
    for value in values or ["bleu"]:
        for name in value.split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name not in METRICS:
                raise ValueError(f"unknown metric {name!r}: choose from {', '.join(METRICS)}")
            if name not in names:
                names.append(name)
    if not names:
        raise ValueError(f"--metric is empty: choose from {', '.join(METRICS)}")
    return names


def read_generate_output(path):
    rows = {"S": {}, "T": {}, "D": {}}
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^([STD])-(\d+)\t(.*)$", line.rstrip("\n"))
            if not m:
                continue
            kind, i, rest = m.group(1), int(m.group(2)), m.group(3)
            if kind == "D":
                rest = rest.split("\t", 1)[1] if "\t" in rest else ""
            rows[kind][i] = rest
    if not rows["T"]:
        raise SystemExit(f"fairseq-plm-score: {path} has no T- (reference) lines")
    missing = sorted(set(rows["T"]) - set(rows["D"]))
    if missing:
        raise SystemExit(f"fairseq-plm-score: {path} lacks hypotheses for {len(missing)} sentences, e.g. id {missing[0]}")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generate-output")
    p.add_argument("--hyp")
    p.add_argument("--ref", help="reference file; with --generate-output it replaces the T- lines "
                                 "(raw references instead of round-tripped ones)")
    p.add_argument("--tokenize", default="13a", help="sacrebleu tokenizer: 13a, or zh for Chinese "
                                                     "(BLEU only)")
    p.add_argument("--metric", action="append", metavar="NAME[,NAME]",
                   help=f"metric(s) to print: {', '.join(METRICS)}; repeatable or a comma list "
                        "(default: bleu)")
    p.add_argument("--source-as-hypothesis", action="store_true", help="score the source (copy baseline)")
    args = p.parse_args(argv)
    try:
        metrics = parse_metrics(args.metric)
    except ValueError as e:
        p.error(str(e))
    if args.generate_output:
        rows = read_generate_output(args.generate_output)
        ids = sorted(rows["T"])
        hyps = [rows["S" if args.source_as_hypothesis else "D"][i] for i in ids]
        refs = [rows["T"][i] for i in ids]
        if args.ref:  # the raw references (sentence i = line i), as the paper scores against
            raw = open(args.ref, encoding="utf-8").read().splitlines()
            if len(raw) <= max(ids):
                p.error(f"{args.ref} has {len(raw)} lines but the generate output has sentence id {max(ids)}")
            refs = [raw[i] for i in ids]
    elif args.hyp and args.ref:
        hyps = open(args.hyp, encoding="utf-8").read().splitlines()
        refs = open(args.ref, encoding="utf-8").read().splitlines()
        if len(hyps) != len(refs):
            p.error(f"{args.hyp} has {len(hyps)} lines but {args.ref} has {len(refs)}")
    else:
        p.error("give --generate-output, or --hyp and --ref")
    for metric in metrics:
        if metric == "bleu":
            score, signature = bleu(hyps, refs, args.tokenize)
            print(f"BLEU = {score.score:.2f} ({len(hyps)} sentences) | {signature}")
            print(f"       {score}")
        else:
            label, score_fn, signature_fn = {
                "rouge-l": ("ROUGE-L", gm.rouge_l, gm.rouge_l_signature),
                "meteor": ("METEOR", gm.meteor, gm.meteor_signature)}[metric]
            try:
                value, signature = score_fn(hyps, refs), signature_fn()
            except (ImportError, gm.WordNetMissing) as e:  # packages of requirements-eval.txt
                raise SystemExit(f"fairseq-plm-score: {e}")
            print(f"{label} = {value:.2f} ({len(hyps)} sentences) | {signature}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()

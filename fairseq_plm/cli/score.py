"""``fairseq-plm-score``: sacrebleu BLEU (with signature) of a fairseq-generate output.

    fairseq-plm-score --generate-output gen.out [--tokenize zh] [--source-as-hypothesis]
    fairseq-plm-score --generate-output gen.out --metric rouge-l,meteor

``--metric`` (repeatable, or a comma list; default ``bleu``) picks bleu, rouge-l and/or
meteor; ROUGE-L and METEOR are means of sentence scores x100 (see
``fairseq_plm.data.generation_metrics``; they need ``pip install -r requirements-eval.txt``).

reads the ``D-`` (detokenized hypothesis) and ``T-`` (reference) lines, in sentence-id order;
``--source-as-hypothesis`` scores the ``S-`` lines instead (the copy-the-source baseline).
Plain files work too: ``--hyp FILE --ref FILE``.

Significance (``fairseq_plm.data.significance``, sacrebleu's implementation): two or more
systems on the same references, the first being the baseline::

    fairseq-plm-score --compare base.out sys1.out sys2.out [--names base,a,b] [--ref test.de] \
        [--paired bs,ar] [--n-samples N] [--seed 12345]

prints, per test, each system's BLEU, its bootstrap mean ± 95% confidence interval and the
p-value against the baseline (paired bootstrap resampling: 1000 resamples; paired approximate
randomization: 10000 trials). A system file is a fairseq-generate output (references from its
T- lines unless --ref is given) or a plain hypothesis file (then --ref is needed).
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
    add_compare_args(p)
    args = p.parse_args(argv)
    try:
        metrics = parse_metrics(args.metric)
    except ValueError as e:
        p.error(str(e))
    if args.compare:
        return compare_systems(p, args, metrics)
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


# ------------------------------------------------------------------------------ --compare (significance)

def add_compare_args(p):
    g = p.add_argument_group("significance (sacrebleu's paired tests)")
    g.add_argument("--compare", nargs="+", metavar="SYSTEM",
                   help="two or more systems' outputs (fairseq-generate outputs or plain hypothesis files) on the "
                        "same references; the first is the baseline")
    g.add_argument("--names", help="comma-separated system names for --compare (default: the file names)")
    g.add_argument("--paired", default="bs,ar", help="tests: bs (paired bootstrap resampling), ar (paired "
                                                     "approximate randomization), or bs,ar (default)")
    g.add_argument("--n-samples", type=int, default=0,
                   help="resamples (bs) / trials (ar); 0 = sacrebleu's defaults, 1000 / 10000")
    g.add_argument("--seed", type=int, default=12345, help="seed of the resampling (sacrebleu's default 12345)")


def _read_system(p, path, ref_lines):
    """(hypotheses, references or None) of one --compare file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        p.error(f"--compare {path}: {e.strerror}")
    if re.search(r"^T-\d+\t", text, flags=re.M):  # a fairseq-generate output
        rows = read_generate_output(path)
        ids = sorted(rows["T"])
        refs = [rows["T"][i] for i in ids]
        if ref_lines is not None:
            if len(ref_lines) <= max(ids):
                p.error(f"{path}: sentence id {max(ids)} but --ref has {len(ref_lines)} lines")
            refs = [ref_lines[i] for i in ids]
        return [rows["D"][i] for i in ids], refs
    return text.splitlines(), None


def compare_systems(p, args, metrics):
    from ..data import significance

    if len(args.compare) < 2:
        p.error("--compare needs at least two systems (the first is the baseline)")
    if metrics != ["bleu"]:
        p.error(f"--compare tests BLEU only (got --metric {','.join(metrics)})")
    names = args.names.split(",") if args.names else list(args.compare)
    if len(names) != len(args.compare):
        p.error(f"--names gives {len(names)} names for {len(args.compare)} systems")
    tests = [t.strip() for t in args.paired.split(",") if t.strip()]
    bad = [t for t in tests if t not in significance.TESTS]
    if bad or not tests:
        p.error(f"--paired {args.paired!r}: choose bs, ar or bs,ar")
    ref_lines = open(args.ref, encoding="utf-8").read().splitlines() if args.ref else None
    systems, refs = [], None
    for name, path in zip(names, args.compare):
        hyps, sys_refs = _read_system(p, path, ref_lines)
        sys_refs = sys_refs if sys_refs is not None else ref_lines
        if sys_refs is None:
            p.error(f"{path} is a plain hypothesis file: give the references with --ref")
        if len(hyps) != len(sys_refs):
            p.error(f"{path} has {len(hyps)} hypotheses but the references have {len(sys_refs)} lines")
        if refs is not None and sys_refs != refs:
            p.error(f"{path}: its references differ from those of {args.compare[0]} (the systems must be "
                    f"compared on the same test set)")
        refs = sys_refs
        systems.append((name, hyps))
    for test in tests:
        signature, results = significance.paired_test(systems, refs, test=test, tokenize=args.tokenize,
                                                      n_samples=args.n_samples, seed=args.seed)
        print(significance.format_paired_test(results, signature, test))
        print(flush=True)


if __name__ == "__main__":
    main()

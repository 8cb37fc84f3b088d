"""``fairseq-plm-score``: sacrebleu BLEU (with signature) of a fairseq-generate output.

    fairseq-plm-score --generate-output gen.out [--tokenize zh] [--source-as-hypothesis]

reads the ``D-`` (detokenized hypothesis) and ``T-`` (reference) lines, in sentence-id order;
``--source-as-hypothesis`` scores the ``S-`` lines instead (the copy-the-source baseline).
Plain files work too: ``--hyp FILE --ref FILE``.
"""

import argparse
import re
import sys

from ..data.text_processing import bleu


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
    p.add_argument("--tokenize", default="13a", help="sacrebleu tokenizer: 13a, or zh for Chinese")
    p.add_argument("--source-as-hypothesis", action="store_true", help="score the source (copy baseline)")
    args = p.parse_args(argv)
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
    score, signature = bleu(hyps, refs, args.tokenize)
    print(f"BLEU = {score.score:.2f} ({len(hyps)} sentences) | {signature}")
    print(f"       {score}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

"""``fairseq-plm-score``: sacrebleu BLEU (with signature) of a fairseq-generate output.

    fairseq-plm-score --generate-output gen.out [--tokenize zh] [--source-as-hypothesis]
    fairseq-plm-score --generate-output gen.out --metric rouge-l,meteor

``--metric`` (repeatable, or a comma list; default ``bleu``) picks bleu, rouge-l and/or
meteor; ROUGE-L and METEOR are means of sentence scores x100 (see
``fairseq_plm.data.generation_metrics``; they need ``pip install -r requirements-eval.txt``).

reads the ``D-`` (detokenized hypothesis) and ``T-`` (reference) lines, in sentence-id order;
``--source-as-hypothesis`` scores the ``S-`` lines instead (the copy-the-source baseline).
Plain files work too: ``--hyp FILE --ref FILE``.

Refused, with one line: hypotheses and references that do not pair up exactly (line counts
differ, or the generate output lacks sentences of ``--ref``), empty or missing files, and
sentencepiece/WordPiece pieces (fairseq-generate run without ``--bpe``), which score far from
the detokenized text's BLEU; ``--allow-pieces`` scores them anyway, with a warning. Lines are
split as fairseq-preprocess splits them (``\\n``, ``\\r\\n``, ``\\r``; not U+2028, form feed...).

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
from ..data.text_processing import LineReader, bleu, read_lines
from ..plm.errors import FairseqPLMError, command

METRICS = ("bleu", "rouge-l", "meteor")
# a text is taken for pieces when this share of its whitespace-separated tokens are pieces
PIECES_SHARE = 0.2


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


# ------------------------------------------------------------------ reading

def read_generate_output(path):
    """{"S"|"T"|"D": {sentence id: text}} of a fairseq-generate output."""
    rows = {"S": {}, "T": {}, "D": {}}
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise FairseqPLMError(f"--generate-output {path}: file not found") from None
    with f:
        for line in LineReader(f, f"--generate-output {path}"):
            m = re.match(r"^([STD])-(\d+)\t(.*)$", line)
            if not m:
                continue
            kind, i, rest = m.group(1), int(m.group(2)), m.group(3)
            if kind == "D":
                rest = rest.split("\t", 1)[1] if "\t" in rest else ""
            rows[kind][i] = rest
    if not rows["T"]:
        raise FairseqPLMError(f"--generate-output {path} has no T- (reference) lines: not a fairseq-generate "
                              f"output, or generated without references")
    missing = sorted(set(rows["T"]) - set(rows["D"]))
    if missing:
        raise FairseqPLMError(f"--generate-output {path} lacks hypotheses for {len(missing)} sentences, "
                              f"e.g. id {missing[0]}")
    return rows


def _nonempty(lines, flag, path):
    if not lines:
        raise FairseqPLMError(f"{flag} {path} is empty")
    return lines


def read_hypotheses_and_references(generate_output=None, hyp=None, ref=None, source_as_hypothesis=False):
    """(hypotheses, references, their file, the references' file), paired line by line.

    * ``generate_output``: its D- (or S-) lines in sentence-id order, against its T- lines, or
      against ``ref``'s lines (sentence i = line i + 1), which must be exactly the sentences
      of the output;
    * ``hyp`` and ``ref``: two files with exactly as many lines."""
    if generate_output:
        rows = read_generate_output(generate_output)
        ids = sorted(rows["T"])
        hyps = [rows["S" if source_as_hypothesis else "D"].get(i, "") for i in ids]
        if source_as_hypothesis and len(rows["S"]) < len(ids):
            raise FairseqPLMError(f"--generate-output {generate_output} lacks S- (source) lines")
        refs = [rows["T"][i] for i in ids]
        if ref:  # the raw references, as the paper scores against
            raw = _nonempty(read_lines(ref, "--ref"), "--ref", ref)
            if len(raw) != len(ids):
                raise FairseqPLMError(
                    f"--ref {ref} has {len(raw)} lines but --generate-output {generate_output} has "
                    f"{len(ids)} sentences: they must be the same sentences (the split that was generated)")
            if ids != list(range(len(raw))):
                gap = sorted(set(range(len(raw))) - set(ids))
                raise FairseqPLMError(
                    f"--generate-output {generate_output} has no translation of line {gap[0] + 1} of --ref {ref} "
                    f"(and {len(gap) - 1} more; ids up to {ids[-1]}): was it generated with "
                    f"--skip-invalid-size-inputs-valid-test or from another split?")
            return hyps, raw, generate_output, ref
        return hyps, refs, generate_output, generate_output
    if hyp and ref:
        hyps = _nonempty(read_lines(hyp, "--hyp"), "--hyp", hyp)
        refs = _nonempty(read_lines(ref, "--ref"), "--ref", ref)
        if len(hyps) != len(refs):
            raise FairseqPLMError(f"--hyp {hyp} has {len(hyps)} lines but --ref {ref} has {len(refs)}: "
                                  f"line i of each must be the same sentence")
        return hyps, refs, hyp, ref
    raise FairseqPLMError("give --generate-output, or --hyp and --ref")


def pieces_kind(lines):
    """'sentencepiece' / 'WordPiece' when ``lines`` look like a tokenizer's pieces, else None."""
    tokens = [t for line in lines for t in line.split()]
    if not tokens:
        return None
    if sum(t.startswith("\u2581") for t in tokens) > PIECES_SHARE * len(tokens):
        return "sentencepiece"
    if sum(t.startswith("##") for t in tokens) > PIECES_SHARE / 2 * len(tokens):
        return "WordPiece"
    return None


def check_not_pieces(hyps, refs, hyp_file, ref_file, allow=False):
    for what, lines, where in (("hypotheses", hyps, hyp_file), ("references", refs, ref_file)):
        kind = pieces_kind(lines)
        if kind is None:
            continue
        fix = ("--bpe sentencepiece --sentencepiece-model <PLM>/spiece.model" if kind == "sentencepiece"
               else "--bpe wordpiece --wordpiece-vocab <PLM>/vocab.txt")
        message = (f"the {what} ({where}) are {kind} pieces, not text (fairseq-generate without --bpe?); "
                   f"scores on pieces are not comparable to scores on text: generate with {fix}")
        if not allow:
            raise FairseqPLMError(message + ", or pass --allow-pieces to score the pieces anyway")
        print(f"fairseq-plm-score: WARNING: {message}", file=sys.stderr)


# ------------------------------------------------------------------ scoring

def score(hyps, refs, metrics, tokenize="13a"):
    """Yields the lines to print: each metric's value with its signature."""
    for metric in metrics:
        if metric == "bleu":
            value, signature = bleu(hyps, refs, tokenize)
            yield f"BLEU = {value.score:.2f} ({len(hyps)} sentences) | {signature}"
            yield f"       {value}"
            continue
        label, score_fn, signature_fn = {
            "rouge-l": ("ROUGE-L", gm.rouge_l, gm.rouge_l_signature),
            "meteor": ("METEOR", gm.meteor, gm.meteor_signature)}[metric]
        try:
            value, signature = score_fn(hyps, refs), signature_fn()
        except (ImportError, gm.WordNetMissing) as e:  # packages of requirements-eval.txt
            raise FairseqPLMError(str(e)) from None
        yield f"{label} = {value:.2f} ({len(hyps)} sentences) | {signature}"


@command("fairseq-plm-score")
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
    p.add_argument("--allow-pieces", action="store_true",
                   help="score sentencepiece/WordPiece pieces (generate output without --bpe) with a warning "
                        "instead of refusing")
    add_compare_args(p)
    args = p.parse_args(argv)
    try:
        metrics = parse_metrics(args.metric)
    except ValueError as e:
        p.error(str(e))
    if args.compare:
        return compare_systems(p, args, metrics)
    if not args.generate_output and not (args.hyp and args.ref):
        p.error("give --generate-output, or --hyp and --ref")
    hyps, refs, hyp_file, ref_file = read_hypotheses_and_references(
        args.generate_output, args.hyp, args.ref, args.source_as_hypothesis)
    check_not_pieces(hyps, refs, hyp_file, ref_file, allow=args.allow_pieces)
    for line in score(hyps, refs, metrics, args.tokenize):
        print(line, flush=True)


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


def _read_system(path, ref):
    """(hypotheses, references or None) of one --compare file: a fairseq-generate output (its
    T- lines, or ``ref`` paired with it exactly as for scoring) or a plain hypothesis file."""
    lines = _nonempty(read_lines(path, "--compare"), "--compare", path)
    if any(re.match(r"^T-\d+\t", line) for line in lines):
        hyps, refs, _, _ = read_hypotheses_and_references(path, ref=ref)
        return hyps, refs
    return lines, None


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
    ref_lines = _nonempty(read_lines(args.ref, "--ref"), "--ref", args.ref) if args.ref else None
    systems, refs = [], None
    for name, path in zip(names, args.compare):
        hyps, sys_refs = _read_system(path, args.ref)
        sys_refs = sys_refs if sys_refs is not None else ref_lines
        if sys_refs is None:
            p.error(f"{path} is a plain hypothesis file: give the references with --ref")
        if len(hyps) != len(sys_refs):
            p.error(f"{path} has {len(hyps)} hypotheses but the references have {len(sys_refs)} lines")
        if refs is not None and sys_refs != refs:
            p.error(f"{path}: its references differ from those of {args.compare[0]} (the systems must be "
                    f"compared on the same test set)")
        check_not_pieces(hyps, sys_refs, path, args.ref or path, allow=args.allow_pieces)
        refs = sys_refs
        systems.append((name, hyps))
    for test in tests:
        signature, results = significance.paired_test(systems, refs, test=test, tokenize=args.tokenize,
                                                      n_samples=args.n_samples, seed=args.seed)
        print(significance.format_paired_test(results, signature, test))
        print(flush=True)


if __name__ == "__main__":
    main()

"""``fairseq-plm-{train,generate,interactive,validate,preprocess}``: fairseq's own CLIs with
``--user-dir`` pointing at this package added automatically, so a checkpoint of ours can never
fail with fairseq's unhelpful error for an unregistered model, run inside this package's error
boundary (``plm.errors.command``: input errors print as one line), plus checks fairseq lacks:

* train: ``--fp16`` on a CPU, ``--bf16`` without TPU support: one line saying what to do,
  before fairseq fails deep inside its optimizer or TPU set-up;
* preprocess: before anything is written, every source/target file pair must have as many
  lines (counted as fairseq counts them) and be valid UTF-8; text binarized with a PLM
  dictionary must mostly be in that PLM's vocabulary (``--max-unk-ratio``, default 5% of the
  tokens of each file's first 10,000 lines), else the raw text was never run through
  ``fairseq-plm-encode`` and the data would be mostly ``<unk>``;
* interactive: a line of invalid UTF-8 is translated with its bad bytes replaced by U+FFFD
  (a warning names the line) instead of ending the run, for standard input and ``--input FILE``
  alike: every input line gets exactly one translation, in order. (With ``--direction`` the
  command is ``cli/translate.py``, which reads its input the same way.)
"""

import os
import sys

import fairseq_plm

from ..plm.errors import FairseqPLMError, command

USER_DIR = os.path.dirname(os.path.abspath(fairseq_plm.__file__))
UNK_SAMPLE_LINES = 10000


def _with_user_dir(argv):
    if any(a == "--user-dir" or a.startswith("--user-dir=") for a in argv):
        return argv
    return argv + ["--user-dir", USER_DIR]


def _run(module_name, argv=None):
    import importlib

    sys.argv = [sys.argv[0]] + _with_user_dir(sys.argv[1:] if argv is None else argv)
    return importlib.import_module(module_name).cli_main()


def _flag_value(argv, flag):
    """(value, index of the flag) of ``--flag VALUE`` / ``--flag=VALUE``, the last one given."""
    found = None, None
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            found = argv[i + 1], i
        elif a.startswith(flag + "="):
            found = a.split("=", 1)[1], i
    return found


# ------------------------------------------------------------------ train

@command("fairseq-plm-train")
def train():
    from ..tasks.plm_translation import half_precision_problem

    argv = sys.argv[1:]
    problem = half_precision_problem(
        fp16=any(a in ("--fp16", "--memory-efficient-fp16") for a in argv),
        bf16=any(a in ("--bf16", "--memory-efficient-bf16") for a in argv),
        cpu="--cpu" in argv)
    if problem:
        raise FairseqPLMError(problem)
    return _run("fairseq_cli.train")


@command("fairseq-plm-generate")
def generate():
    return _run("fairseq_cli.generate")


@command("fairseq-plm-validate")
def validate():
    return _run("fairseq_cli.validate")


# ------------------------------------------------------------------ interactive

@command("fairseq-plm-interactive")
def interactive():
    """fairseq-interactive reads its input through ``fileinput`` (strict UTF-8 for a file,
    the locale's error handling for stdin): one bad line would end the run. We hand it our
    ``LineReader`` as standard input instead (``--input FILE`` is read the same way)."""
    from ..data.text_processing import LineReader

    argv = sys.argv[1:]
    if any(a == "--direction" or a.startswith("--direction=") for a in argv):
        from .translate import main  # several prompt checkpoints, direction per line (cli/translate.py)

        return main(argv)
    path, at = _flag_value(argv, "--input")
    if path is not None and path != "-":
        try:
            stream = open(path, "rb")
        except OSError as e:
            raise FairseqPLMError(f"--input {path}: {e.strerror}") from None
        argv = argv[:at] + (["--input", "-"] if argv[at] == "--input" else ["--input=-"]) + \
            argv[at + (2 if argv[at] == "--input" else 1):]
        sys.stdin = LineReader(stream, f"--input {path}", errors="replace")
    else:
        sys.stdin = LineReader(sys.stdin.buffer, "<stdin>", errors="replace")
    return _run("fairseq_cli.interactive", argv)


# ------------------------------------------------------------------ preprocess

def _prefixes(args):
    out = [("--trainpref", args.trainpref)] if args.trainpref else []
    for flag, value in (("--validpref", args.validpref), ("--testpref", args.testpref)):
        out += [(flag, p) for p in (value or "").split(",") if p]
    return out


def check_line_counts(args):
    """Each source/target pair has as many lines, all valid UTF-8 (fairseq would binarize a
    shifted corpus, and only fail at training time, or die on the bad byte in a worker)."""
    from ..data.text_processing import count_lines

    src, tgt = args.source_lang, args.target_lang
    for flag, pref in _prefixes(args):
        n_src = count_lines(f"{pref}.{src}", flag)
        if args.only_source or not tgt:
            continue
        n_tgt = count_lines(f"{pref}.{tgt}", flag)
        if n_src != n_tgt:
            raise FairseqPLMError(
                f"{pref}.{src} has {n_src} lines but {pref}.{tgt} has {n_tgt} ({flag} {pref}): line i of "
                f"each must be the same sentence pair; nothing was written")


def unk_share(path, dictionary, max_lines=UNK_SAMPLE_LINES):
    """(share of tokens that ``dictionary`` maps to <unk>, tokens counted) over the first
    ``max_lines`` lines of ``path``, split into tokens exactly as fairseq-preprocess does."""
    from fairseq.tokenizer import tokenize_line

    from ..data.text_processing import LineReader

    unknown = total = 0
    with open(path, "rb") as f:
        for i, line in enumerate(LineReader(f, path)):
            if i >= max_lines:
                break
            tokens = tokenize_line(line)
            total += len(tokens)
            unknown += sum(1 for t in tokens if dictionary.index(t) == dictionary.unk_index)
    return (unknown / total if total else 0.0), total


def check_unknown_tokens(args, max_ratio):
    """Text binarized with a PLM dictionary must already be in the PLM's pieces."""
    from fairseq.tasks import TASK_REGISTRY

    from ..plm.vocab import PLMDictionary

    task = TASK_REGISTRY.get(args.task)
    if task is None or max_ratio >= 1:
        return
    sides = [(args.source_lang, args.srcdict)]
    if not args.only_source and args.target_lang:
        sides.append((args.target_lang, args.tgtdict or (args.srcdict if args.joined_dictionary else None)))
    for lang, dict_path in sides:
        if not dict_path or not lang:
            continue
        dictionary = task.load_dictionary(dict_path)
        if not isinstance(dictionary, PLMDictionary):
            continue
        for flag, pref in _prefixes(args):
            share, total = unk_share(f"{pref}.{lang}", dictionary)
            if share > max_ratio:
                raise FairseqPLMError(
                    f"{pref}.{lang}: {share:.0%} of its tokens (first {UNK_SAMPLE_LINES} lines, {total} tokens) are "
                    f"not in the vocabulary of {dict_path} and would become <unk>: the raw text was not encoded "
                    f"with the PLM's tokenizer; run fairseq-plm-encode --tokenizer <PLM> on it first (or pass "
                    f"--max-unk-ratio 1 to binarize it anyway)")


@command("fairseq-plm-preprocess")
def preprocess():
    from fairseq import options
    from fairseq_cli import preprocess as fairseq_preprocess

    sys.argv = [sys.argv[0]] + _with_user_dir(sys.argv[1:])
    parser = options.get_preprocessing_parser()
    parser.add_argument("--max-unk-ratio", type=float, default=0.05, metavar="R",
                        help="(fairseq-plm-preprocess) refuse text whose tokens are more than this share "
                             "<unk> in a PLM dictionary (--srcdict/--tgtdict of a PLM): text not encoded "
                             "with fairseq-plm-encode. 1 disables the check")
    args = parser.parse_args(sys.argv[1:])
    check_line_counts(args)
    check_unknown_tokens(args, args.max_unk_ratio)
    return fairseq_preprocess.main(args)

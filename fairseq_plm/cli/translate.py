"""``fairseq-plm-interactive --direction NAME=CHECKPOINT ...``: several prompt checkpoints on
one frozen PLM, the direction chosen per input line.

    fairseq-plm-interactive --direction de=ckpt/en-de.pt --direction ro=ckpt/en-ro.pt < input.txt

Input: one text per line. A line starting with a tag ``<2NAME>`` (e.g. ``<2de> Open the
file``) is translated in direction NAME; a line without a tag in ``--default-direction``
(default: the only direction, when there is one). Output: exactly one line per input line,
in order: its translation. A line that cannot be translated (unknown direction, beyond the
PLM's positions) gets an empty output line and one line on stderr naming the input line; the
command then exits with status 1 after the last line. A blank line gives a blank line. Bytes
that are not UTF-8 are read as U+FFFD. Without ``--direction`` the command is fairseq's own
``fairseq-interactive``.

Each ``--direction`` may carry its own settings after commas, overriding the flags:
``--direction en-ro=ckpt.pt,beam=5,lenpen=0.6`` (keys: beam, lenpen, max_len_a, max_len_b,
iter_decode_max_iter, remove_diacritics, zh_punct, plm). Checkpoints are loaded through
``fairseq_plm.api.Translator`` (fairseq's ``load_checkpoint_to_cpu``).
"""

import argparse
import io
import os
import re
import sys

TAG = re.compile(r"^<2([^<>\s]+)>\s?")
DIRECTION_KEYS = {"beam": int, "lenpen": float, "max_len_a": float, "max_len_b": int,
                  "iter_decode_max_iter": int, "remove_diacritics": "bool", "zh_punct": "bool", "plm": str}


def add_translator_args(p):
    """Options shared by fairseq-plm-interactive (multi-direction) and fairseq-plm-serve."""
    p.add_argument("--direction", action="append", required=True, metavar="NAME=CHECKPOINT[,key=value...]",
                   help="a prompt checkpoint served as direction NAME (repeat for several); optional settings "
                        "after commas: " + ", ".join(DIRECTION_KEYS))
    p.add_argument("--plm", default=None, help="PLM directory for every checkpoint (default: each checkpoint's own)")
    p.add_argument("--beam", type=int, default=4, help="beam size (MSP family)")
    p.add_argument("--lenpen", type=float, default=1.0, help="length penalty (MSP family)")
    p.add_argument("--max-len-a", type=float, default=0.0, help="max target length = a * source length + b")
    p.add_argument("--max-len-b", type=int, default=200)
    p.add_argument("--iter-decode-max-iter", type=int, default=10, help="SGA denoising loops")
    p.add_argument("--batch-size", type=int, default=32, help="most texts per generation batch")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is available")
    p.add_argument("--fp16", action="store_true", help="half precision (GPU)")


def parse_direction(spec, defaults):
    """``NAME=CHECKPOINT[,key=value...]`` -> (name, checkpoint, settings)."""
    from ..plm.errors import FairseqPLMError

    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise FairseqPLMError(f"--direction {spec!r}: expected NAME=CHECKPOINT[,key=value...]")
    checkpoint, *options = rest.split(",")
    settings = dict(defaults)
    for opt in options:
        key, sep, value = opt.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in DIRECTION_KEYS:
            raise FairseqPLMError(f"--direction {spec!r}: unknown setting {opt!r} (known: {', '.join(DIRECTION_KEYS)})")
        kind = DIRECTION_KEYS[key]
        try:
            if kind == "bool":
                if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(value)
                settings[key] = value.lower() in ("1", "true", "yes")
            else:
                settings[key] = kind(value)
        except ValueError:
            raise FairseqPLMError(f"--direction {spec!r}: {key}={value!r} is not a valid value") from None
    return name, checkpoint, settings


def load_translator(args):
    from ..api import Translator

    defaults = {"beam": args.beam, "lenpen": args.lenpen, "max_len_a": args.max_len_a, "max_len_b": args.max_len_b,
                "iter_decode_max_iter": args.iter_decode_max_iter}
    translator = Translator(plm=args.plm, device="cpu" if args.cpu else None, fp16=args.fp16,
                            batch_size=args.batch_size)
    for spec in args.direction:
        name, checkpoint, settings = parse_direction(spec, defaults)
        translator.add_direction(name, checkpoint, **settings)
    return translator


def split_tag(line, default):
    """(direction, text) of an input line."""
    m = TAG.match(line)
    if m:
        return m.group(1), line[m.end():]
    return default, line


def main(argv=None):
    from ..plm.errors import FairseqPLMError

    p = argparse.ArgumentParser(prog="fairseq-plm-interactive", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_translator_args(p)
    p.add_argument("--default-direction", default=None,
                   help="direction of lines without a <2NAME> tag (default: the only direction)")
    p.add_argument("--input", default="-", help="input file (default: stdin)")
    p.add_argument("--buffer-size", type=int, default=None,
                   help="lines read before translating (default: 1 on a terminal, else --batch-size)")
    args = p.parse_args(argv)
    prog = "fairseq-plm-interactive"
    try:
        translator = load_translator(args)
    except (FairseqPLMError, FileNotFoundError) as e:
        sys.exit(f"{prog}: error: {e}")
    default = args.default_direction
    if default is None and len(translator.directions) == 1:
        default = translator.directions[0]
    if default is not None and default not in translator.directions:
        sys.exit(f"{prog}: error: --default-direction {default!r} is not a loaded direction "
                 f"(known: {', '.join(translator.directions)})")
    if args.input != "-" and not os.path.exists(args.input):
        sys.exit(f"{prog}: error: input file not found: {args.input}")
    raw = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline=None)
    buffer_size = args.buffer_size or (1 if raw.isatty() else args.batch_size)
    failed = 0
    number = 0
    lines = []

    def flush():
        nonlocal failed
        outputs = translate_lines(translator, lines, default)
        for (n, _), (out, err) in zip(lines, outputs):
            if err is not None:
                failed += 1
                print(f"{prog}: line {n}: {err}", file=sys.stderr, flush=True)
            sys.stdout.write(out + "\n")
        sys.stdout.flush()
        lines.clear()

    for line in stream:
        number += 1
        lines.append((number, line.rstrip("\r\n")))
        if len(lines) >= buffer_size:
            flush()
    if lines:
        flush()
    if failed:
        sys.exit(f"{prog}: {failed} of {number} lines could not be translated (empty output lines)")


def translate_lines(translator, lines, default):
    """[(line number, text)] -> [(output, error or None)], one per line, in order."""
    from ..api import TextError

    results = [("", None)] * len(lines)
    todo = []
    for i, (_, line) in enumerate(lines):
        if not line.strip():
            continue  # a blank line gives a blank line
        direction, text = split_tag(line, default)
        if direction is None:
            results[i] = ("", f"no <2NAME> tag and no --default-direction (known: {', '.join(translator.directions)})")
            continue
        if direction not in translator.directions:
            results[i] = ("", f"unknown direction {direction!r} (known: {', '.join(translator.directions)})")
            continue
        try:
            translator.encode([text], direction)
        except TextError as e:
            results[i] = ("", f"the text {e.reason}")
            continue
        todo.append((i, direction, text))
    if todo:
        outs = translator.translate([t for _, _, t in todo], [d for _, d, _ in todo])
        for (i, _, _), out in zip(todo, outs):
            results[i] = (out.replace("\n", " "), None)
    return results

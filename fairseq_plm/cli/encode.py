"""``fairseq-plm-encode``: tokenize raw text with a PLM's own tokenizer, one line in, one line
of space-separated pieces out (the input format of ``fairseq-preprocess``).

Nothing is lost: an output that is the same file as an input (or as another output) is refused
before anything is written; each output is written to a temporary file next to it and renamed
into place once its whole input has been encoded, so a failure (invalid UTF-8, Ctrl-C, a full
disk) leaves every existing file as it was. Lines are split as fairseq-preprocess splits them
(``\\n``, ``\\r\\n``, ``\\r``); a line that is not valid UTF-8 is refused naming file and line."""

import argparse
import contextlib
import os
import sys

from ..data.text_processing import LineReader, atomic_output, same_file
from ..plm.errors import FairseqPLMError, command
from ..plm.vocab import make_encoder


def check_files(inputs, outputs):
    """Refuse, before writing anything, a missing input and an output that would overwrite
    an input (or another output) of this run."""
    for src in inputs:
        if src != "-" and not os.path.isfile(src):
            raise FairseqPLMError(f"--inputs {src}: " + ("is a directory" if os.path.isdir(src) else "file not found"))
    for i, dst in enumerate(outputs):
        if dst == "-":
            continue
        if os.path.isdir(dst):
            raise FairseqPLMError(f"--outputs {dst} is a directory; give a file name")
        for src in inputs:
            if same_file(src, dst):
                raise FairseqPLMError(f"--outputs {dst} is the same file as --inputs {src}: writing it would "
                                      f"destroy the input; write the encoded text to another file")
        for other in outputs[:i]:
            if same_file(other, dst):
                raise FairseqPLMError(f"--outputs names {dst} twice ({other}); give each input its own output")


@command("fairseq-plm-encode")
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", required=True, help="PLM directory or its spiece.model / sentencepiece.bpe.model / vocab.txt")
    p.add_argument("--inputs", nargs="+", default=["-"])
    p.add_argument("--outputs", nargs="+", default=["-"])
    p.add_argument("--remove-diacritics", action="store_true",
                   help="remove Romanian diacritics first (MSP App. A.2; use on the Romanian side)")
    args = p.parse_args(argv)
    if len(args.inputs) != len(args.outputs):
        p.error(f"--inputs has {len(args.inputs)} files but --outputs {len(args.outputs)}")
    check_files(args.inputs, args.outputs)
    encode = make_encoder(args.tokenizer)
    if args.remove_diacritics:
        from ..data.text_processing import remove_romanian_diacritics

        plain = encode
        encode = lambda line: plain(remove_romanian_diacritics(line))  # noqa: E731
    for src, dst in zip(args.inputs, args.outputs):
        with contextlib.ExitStack() as stack:
            fin = sys.stdin.buffer if src == "-" else stack.enter_context(open(src, "rb"))
            fout = sys.stdout if dst == "-" else stack.enter_context(atomic_output(dst))
            for line in LineReader(fin, "<stdin>" if src == "-" else f"--inputs {src}"):
                fout.write(" ".join(encode(line.strip())) + "\n")
            fout.flush()


if __name__ == "__main__":
    main()

"""``fairseq-plm-encode``: tokenize raw text with a PLM's own tokenizer, one line in, one line
of space-separated pieces out (the input format of ``fairseq-preprocess``)."""

import argparse
import os
import sys

from ..plm.vocab import make_encoder


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tokenizer", required=True, help="PLM directory or its spiece.model / sentencepiece.bpe.model / vocab.txt")
    p.add_argument("--inputs", nargs="+", default=["-"])
    p.add_argument("--outputs", nargs="+", default=["-"])
    p.add_argument("--remove-diacritics", action="store_true",
                   help="remove Romanian diacritics first (MSP App. A.2; use on the Romanian side)")
    args = p.parse_args(argv)
    if len(args.inputs) != len(args.outputs):
        p.error(f"--inputs has {len(args.inputs)} files but --outputs {len(args.outputs)}")
    encode = make_encoder(args.tokenizer)
    if args.remove_diacritics:
        from ..data.text_processing import remove_romanian_diacritics

        plain = encode
        encode = lambda line: plain(remove_romanian_diacritics(line))  # noqa: E731
    for src, dst in zip(args.inputs, args.outputs):
        if src != "-" and not os.path.exists(src):
            p.error(f"input file not found: {src}")
        if dst != "-":
            os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
        fin = sys.stdin if src == "-" else open(src, encoding="utf-8")
        fout = sys.stdout if dst == "-" else open(dst, "w", encoding="utf-8")
        with fin, fout:
            for line in fin:
                fout.write(" ".join(encode(line.strip())) + "\n")


if __name__ == "__main__":
    main()

"""``fairseq-plm-trim-vocab``: a PLM directory trimmed to the pieces a corpus uses.

    fairseq-plm-trim-vocab --plm mgpt-dir --corpus raw/train.en raw/train.de --out mgpt-en-de
    fairseq-plm-trim-vocab --plm xlmr-dir --corpus raw/train.de --keep-pieces extra.txt --out xlmr-de

Keeps every piece the PLM's own tokenizer makes of the corpus lines (``--min-count`` times at
least) plus the special symbols (and the pieces of ``--keep-pieces``), re-indexes the embedding
and output rows, rewrites the tokenizer, and writes a new HuggingFace-format directory that
``--plm`` accepts. Binarize the data again with ``--srcdict/--tgtdict <out dir>``: the pieces are
the same, their ids are not. See ``fairseq_plm/plm/trim.py``.
"""

import argparse
import sys

from ..plm.errors import FairseqPLMError, command


@command("fairseq-plm-trim-vocab")
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plm", required=True, help="PLM directory (HuggingFace or fairseq XLM-R format) with its tokenizer")
    p.add_argument("--corpus", nargs="+", default=[], help="raw text files (one sentence per line) whose pieces to keep")
    p.add_argument("--keep-pieces", help="also keep these pieces (one per line, first field)")
    p.add_argument("--min-count", type=int, default=1, help="keep corpus pieces seen at least this often")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                   help="weights dtype of the output (auto: the source config's, else float32)")
    p.add_argument("--check-lines", type=int, default=2000,
                   help="re-tokenize this many corpus lines with both tokenizers; any difference is an error")
    p.add_argument("--out", required=True, help="new PLM directory (must not exist)")
    args = p.parse_args(argv)
    from ..plm.trim import trim_plm

    try:
        s = trim_plm(args.plm, args.out, args.corpus, args.keep_pieces, args.min_count, args.dtype, args.check_lines)
    except FairseqPLMError as e:
        sys.exit(f"fairseq-plm-trim-vocab: error: {e}")
    print(f"{args.out}: {s['kept']:,} of {s['of']:,} pieces kept ({100 * s['kept'] / s['of']:.1f}%) from "
          f"{s['corpus_tokens']:,} corpus tokens; tokenization identical on {s['tokenization_checked_lines']:,} "
          f"checked lines")


if __name__ == "__main__":
    main()

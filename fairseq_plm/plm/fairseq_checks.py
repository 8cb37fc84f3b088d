"""Checks between fairseq's world (data dictionaries) and the PLM's."""

import os

from .errors import FairseqPLMError
from .vocab import load_dictionary, tokenizer_file


def check_dictionary(dictionary, plm, plm_path, what="dictionary", data=None):
    """The data dictionary must index tokens exactly as the PLM does."""
    where = what if data is None else os.path.join(data.split(":")[0], what)
    if len(dictionary) != plm.cfg.vocab_size:
        raise FairseqPLMError(
            f"{where} has {len(dictionary)} entries but the PLM {plm_path} has "
            f"{plm.cfg.vocab_size} embeddings: binarize the data with "
            f"fairseq-preprocess --srcdict/--tgtdict <the PLM's tokenizer> of this PLM"
        )
    tok = tokenizer_file(plm_path)
    if tok is not None:
        reference = load_dictionary(tok, family=plm.cfg.family, vocab_size=plm.cfg.vocab_size)
        if list(reference.symbols) != list(dictionary.symbols):
            first = next(i for i, (a, b) in enumerate(zip(reference.symbols, dictionary.symbols)) if a != b)
            raise FairseqPLMError(
                f"{where} does not match the vocabulary of {tok}: id {first} is "
                f"{dictionary.symbols[first]!r} in the data but {reference.symbols[first]!r} in the PLM"
            )

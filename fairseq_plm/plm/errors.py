"""Errors this package raises for bad input. Each message names the file, flag or value at
fault; the ``fairseq-plm-*`` commands print them as one line instead of a traceback."""


class FairseqPLMError(ValueError):
    pass

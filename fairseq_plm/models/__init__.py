"""Models of this package, one module per method (each registers itself with fairseq)."""
from . import ctc_nat, fusion, msp, sga  # noqa: F401
from . import mpt  # noqa: F401  (registers mpt, mpt_sp, mpt_ft)

"""Models of this package, one module per method (each registers itself with fairseq)."""
from . import ctc_nat, msp, sga  # noqa: F401

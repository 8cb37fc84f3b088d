"""Criterions of this package (method-specific losses register here)."""
from . import plm_nat_loss  # noqa: F401  (registers plm_nat_loss)

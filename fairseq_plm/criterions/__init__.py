"""Criterions of this package (method-specific losses register here)."""
from . import fusion_loss, plm_nat_loss  # noqa: F401  (registers deep_fusion_loss, plm_nat_loss)
from . import mpt_loss  # noqa: F401  (registers mpt_loss)

"""Options that make a frozen-PLM model faster without changing what it computes.

* ``--output-shortlist`` (plm/shortlist.py): score only the target side's pieces;
* ``--plm-compile``: ``torch.compile`` each block of the PLM (regional compilation: the blocks
  share one code object, so one compilation serves them all; the Python around them, masks,
  caches, beam search, stays eager). Off by default: it pays only where kernel fusion beats
  the compile time and the recompilations that varying shapes cause (see
  benchmarks/RESULTS.md for the measurements); on CPU it needs a C++ compiler.
"""

import logging
from dataclasses import dataclass, field

from .frozen import PromptArgs
from .shortlist import SHORTLIST_HELP

logger = logging.getLogger(__name__)


@dataclass
class FastPromptArgs(PromptArgs):
    output_shortlist: str = field(default="none", metadata={"help": SHORTLIST_HELP})
    plm_compile: bool = field(
        default=False, metadata={"help": "torch.compile the PLM's blocks (inductor; off by default, see "
                                         "benchmarks/RESULTS.md for when it pays)"})


def compile_plm(plm, backend="inductor", mode=None, dynamic=None):
    """``torch.compile`` every transformer block of ``plm`` in place (state dict, parameters and
    checkpoints unchanged). ``backend="aot_eager"`` traces without generating code (tests)."""
    blocks = getattr(plm, "blocks", None) or getattr(plm, "layers")
    for block in blocks:
        block.compile(backend=backend, mode=mode, dynamic=dynamic)
    plm.compiled = backend
    logger.info(f"torch.compile: {len(blocks)} PLM blocks ({backend})")
    return plm


def maybe_compile(plm, cfg):
    if getattr(cfg, "plm_compile", False) and getattr(plm, "compiled", None) is None:
        compile_plm(plm)
    return plm

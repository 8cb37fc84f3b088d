"""Every ``fairseq-plm-*`` command without its console script (e.g. on a machine where the
package is only on PYTHONPATH):

    python -m fairseq_plm.cli train DATA --task plm_translation ...     # = fairseq-plm-train
    python -m fairseq_plm.cli trim-vocab --plm DIR --corpus FILE --out DIR2
"""

import importlib
import sys

COMMANDS = {
    "train": "fairseq_commands:train", "generate": "fairseq_commands:generate",
    "interactive": "fairseq_commands:interactive", "validate": "fairseq_commands:validate",
    "preprocess": "fairseq_commands:preprocess", "encode": "encode:main", "score": "score:main",
    "average-checkpoints": "average_checkpoints:main", "mpt-eval": "mpt_eval:main",
    "mpt-aggregate": "mpt_eval:aggregate", "trim-vocab": "trim_vocab:main",
}


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python -m fairseq_plm.cli {{{','.join(COMMANDS)}}} [args...]")
    name = sys.argv.pop(1)
    module, func = COMMANDS[name].split(":")
    sys.argv[0] = f"fairseq-plm-{name}"
    return getattr(importlib.import_module(f"fairseq_plm.cli.{module}"), func)()


if __name__ == "__main__":
    sys.exit(main())

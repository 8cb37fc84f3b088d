"""Run several ``fairseq-train`` command lines in one process (saves the start-up of a process
per run; each run is fairseq's own train entry point with ``--user-dir`` added).

    python tests/train_many.py '[["data-bin", "--arch", "msp", ...], [...]]'
"""

import json
import os
import sys

USER_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fairseq_plm")


def main():
    from fairseq_cli.train import cli_main

    for argv in json.loads(sys.argv[1]):
        sys.argv = ["fairseq-train", *argv, "--user-dir", USER_DIR]
        cli_main()


if __name__ == "__main__":
    main()

"""``fairseq-plm-{train,generate,interactive,validate,preprocess,score}``: fairseq's own CLIs with
``--user-dir`` pointing at this package added automatically, so a checkpoint of ours can never
fail with fairseq's unhelpful error for an unregistered model."""

import os
import sys

import fairseq_plm

USER_DIR = os.path.dirname(os.path.abspath(fairseq_plm.__file__))


def _with_user_dir(argv):
    if any(a == "--user-dir" or a.startswith("--user-dir=") for a in argv):
        return argv
    return argv + ["--user-dir", USER_DIR]


def _run(module_name):
    import importlib

    from ..plm.errors import FairseqPLMError

    sys.argv = [sys.argv[0]] + _with_user_dir(sys.argv[1:])
    try:
        return importlib.import_module(module_name).cli_main()
    except (FairseqPLMError, FileNotFoundError) as e:
        sys.exit(f"{os.path.basename(sys.argv[0])}: error: {e}")


def train():
    return _run("fairseq_cli.train")


def generate():
    return _run("fairseq_cli.generate")


def interactive():
    if any(a == "--direction" or a.startswith("--direction=") for a in sys.argv[1:]):
        from .translate import main  # several prompt checkpoints, direction per line (cli/translate.py)

        return main(sys.argv[1:])
    return _run("fairseq_cli.interactive")


def validate():
    return _run("fairseq_cli.validate")


def preprocess():
    return _run("fairseq_cli.preprocess")

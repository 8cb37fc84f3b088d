"""Errors this package raises for bad input, and the one error boundary of its commands.

Each ``FairseqPLMError`` message names the file, flag, line or value at fault. Every
``fairseq-plm-*`` command runs its ``main`` inside ``command(name)``: a known input failure
prints ``<name>: error: <message>`` as one line on stderr and exits with status 1; any other
exception keeps its full traceback (it is a bug, or something we have not mapped yet).

Known input failures:
  * ``FairseqPLMError`` (and its subclasses: ``VocabularyError``, ``PLMLoadError``...);
  * ``OSError`` naming a file (a missing ``--path``/data file, a directory where a file was
    expected, a permission denied), e.g. fairseq's ``Dataset not found``;
  * fairseq's own argument checks: an ``AssertionError`` raised in a ``fairseq_cli`` script whose
    message names a flag ("Must specify batch size either with --max-tokens or --batch-size");
  * any of those raised while fairseq's trainer loads a checkpoint to resume (it re-raises
    them as a generic ``Exception``, the original as its context);
  * any of those raised inside a worker process of a data-parallel run (torch re-raises it in
    the parent as ``ProcessRaisedException`` holding the worker's traceback as text).
A closed output pipe (``| head``) ends the command quietly; Ctrl-C prints one line (status 130).
"""

import functools
import os
import re
import sys
import traceback


class FairseqPLMError(ValueError):
    pass


# the last line of a worker's traceback, as torch.multiprocessing passes it to the parent
_WORKER_ERROR = re.compile(r"^fairseq_plm(?:\.\w+)*\.(\w+Error): (.+)$")


def _own_error_names():
    names, todo = set(), [FairseqPLMError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


def known_failure(e: BaseException):
    """The one-line message of a known input failure, or None for anything else."""
    if isinstance(e, FairseqPLMError):
        return str(e)
    if isinstance(e, OSError) and (e.filename is not None or isinstance(e, FileNotFoundError)):
        return str(e)
    if isinstance(e, AssertionError) and "--" in str(e) and _raised_in_fairseq_cli(e):
        return str(e)
    if type(e) is Exception and str(e).startswith("Cannot load model parameters from checkpoint") \
            and e.__context__ is not None:
        # fairseq's trainer re-raises any failure of load_state_dict on resume as this generic
        # Exception (the original as its context): report ours, e.g. a PLM fingerprint mismatch
        inner = known_failure(e.__context__)
        if inner is not None:
            where = str(e)[len("Cannot load model parameters from checkpoint "):].split(";")[0]
            return f"{inner} (resuming from {where})"
    if type(e).__name__ == "ProcessRaisedException":
        lines = [line for line in str(e).strip().splitlines() if line.strip()]
        m = _WORKER_ERROR.match(lines[-1]) if lines else None
        if m and m.group(1) in _own_error_names():
            return m.group(2)
    return None


def _raised_in_fairseq_cli(e):
    frames = traceback.extract_tb(e.__traceback__)
    return bool(frames) and f"{os.sep}fairseq_cli{os.sep}" in frames[-1].filename


def one_line(message: str) -> str:
    return " ".join(str(message).split("\n")).strip()


def command(name: str):
    """Decorator: run a command's ``main`` inside this package's error boundary."""

    def wrap(main):
        @functools.wraps(main)
        def run(*args, **kwargs):
            try:
                return main(*args, **kwargs)
            except BrokenPipeError:  # the reader of our output went away: nothing to report
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                sys.exit(1)
            except KeyboardInterrupt:
                print(f"{name}: interrupted", file=sys.stderr)
                sys.exit(130)
            except Exception as e:
                message = known_failure(e)
                if message is None:
                    raise
                try:
                    sys.stdout.flush()
                except Exception:
                    pass
                sys.exit(f"{name}: error: {one_line(message)}")

        run.command_name = name
        return run

    return wrap

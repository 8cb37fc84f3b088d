"""``fairseq-plm-serve``: prompt checkpoints on one frozen PLM as an HTTP JSON service.

    fairseq-plm-serve --direction de=ckpt/en-de.pt --direction ro=ckpt/en-ro.pt --port 8000
    curl -s localhost:8000/translate -H 'Content-Type: application/json' \\
        -d '{"texts": ["Open the file"], "direction": "de"}'

Listens on 127.0.0.1 unless ``--host`` says otherwise. Endpoints, batching and bounds: see
``fairseq_plm/server.py``. Needs the ``serve`` extra (``pip install fairseq_plm[serve]``:
FastAPI and uvicorn). Checkpoints load through ``fairseq_plm.api.Translator`` (fairseq's
``load_checkpoint_to_cpu``); ``--direction`` takes the same settings as
``fairseq-plm-interactive --direction``.
"""

import argparse
import sys

from ..plm.errors import command


def parser():
    from ..server import Limits
    from .translate import add_translator_args

    d = Limits()
    p = argparse.ArgumentParser(prog="fairseq-plm-serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_translator_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-request-bytes", type=int, default=d.max_request_bytes, help="largest request body")
    p.add_argument("--max-texts", type=int, default=d.max_texts, help="most texts in one request")
    p.add_argument("--max-text-chars", type=int, default=d.max_text_chars, help="longest text, in characters")
    p.add_argument("--max-queue-texts", type=int, default=d.max_queue_texts,
                   help="most texts waiting; beyond, requests get 503")
    p.add_argument("--max-batch-texts", type=int, default=d.max_batch_texts, help="most texts in one batch")
    p.add_argument("--batch-window-ms", type=float, default=d.batch_window_ms,
                   help="how long the oldest waiting text waits for others to join its batch")
    p.add_argument("--log-level", default="warning", help="uvicorn's log level")
    return p


@command("fairseq-plm-serve")
def main(argv=None):
    from ..plm.errors import FairseqPLMError
    from ..server import Limits
    from .translate import load_translator

    args = parser().parse_args(argv)
    prog = "fairseq-plm-serve"
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        sys.exit(f"{prog}: error: {e.name} is not installed: pip install 'fairseq_plm[serve]'")
    limits = Limits(max_request_bytes=args.max_request_bytes, max_texts=args.max_texts,
                    max_text_chars=args.max_text_chars, max_queue_texts=args.max_queue_texts,
                    max_batch_texts=args.max_batch_texts, batch_window_ms=args.batch_window_ms)
    try:
        limits.check()
        translator = load_translator(args)
    except (FairseqPLMError, FileNotFoundError) as e:
        sys.exit(f"{prog}: error: {e}")
    from ..server import serve

    def ready(server):
        print(f"{prog}: serving {', '.join(translator.directions)} on http://{args.host}:{args.port}",
              file=sys.stderr, flush=True)

    serve(translator, limits, host=args.host, port=args.port, log_level=args.log_level, on_ready=ready)


if __name__ == "__main__":
    main()

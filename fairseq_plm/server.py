"""HTTP JSON translation service on ``fairseq_plm.api.Translator`` (FastAPI + uvicorn; install
with ``pip install fairseq_plm[serve]``). Started by ``fairseq-plm-serve`` (cli/serve.py).

Endpoints
  ``POST /translate``  ``{"texts": ["...", ...], "direction": "de"}`` (or ``"direction": [one
                       per text]``) -> ``{"translations": ["...", ...]}``, one per text, in order.
  ``GET /health``      ``{"status": "ok", "directions": {...}, "queued_texts": n, "stats": {...}}``

Dynamic batching: texts of concurrent requests wait in one queue; a batch starts when it holds
``max_batch_texts`` texts or when its oldest text has waited ``batch_window_ms``, and may mix
directions (one PLM forward per decoding step for all of them, ``models/multi_prompt.py``). A
text's translation does not depend on its batch, and every request gets all its texts back in
its own order. Generation runs in one worker thread; the event loop keeps accepting requests.

Bounds (each a 4xx with a one-line ``{"error": ...}``): request body ``max_request_bytes``
(413), texts per request ``max_texts`` (413), characters per text ``max_text_chars`` (400),
the direction's positions in tokens (400), empty text (400), unknown direction (400), invalid
JSON or fields (400); queue full (``max_queue_texts`` texts waiting, 503 with Retry-After).
"""

import asyncio
import collections
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .plm.errors import FairseqPLMError


@dataclass
class Limits:
    max_request_bytes: int = 1 << 20
    max_texts: int = 64
    max_text_chars: int = 2000
    max_queue_texts: int = 1024
    max_batch_texts: int = 32
    batch_window_ms: float = 5.0

    def check(self):
        for name in ("max_request_bytes", "max_texts", "max_text_chars", "max_queue_texts", "max_batch_texts"):
            if getattr(self, name) < 1:
                raise FairseqPLMError(f"--{name.replace('_', '-')} must be >= 1")
        if self.batch_window_ms < 0:
            raise FairseqPLMError("--batch-window-ms must be >= 0")
        if self.max_texts > self.max_queue_texts:
            raise FairseqPLMError(f"--max-texts {self.max_texts} exceeds --max-queue-texts {self.max_queue_texts}: "
                                  f"a full request could never be queued")


class QueueFull(Exception):
    pass


class _Request:
    __slots__ = ("results", "left", "future")

    def __init__(self, n, future):
        self.results, self.left, self.future = [None] * n, n, future


class Batcher:
    """Collects texts of concurrent requests into batches (see the module docstring)."""

    def __init__(self, translate, max_batch_texts, batch_window_ms, max_queue_texts):
        self.translate = translate  # (texts, directions) -> translations, run in the worker thread
        self.max_batch, self.window = max_batch_texts, batch_window_ms / 1000.0
        self.max_queue = max_queue_texts
        self.queue = collections.deque()  # (text, direction, request, index, arrival time)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fairseq-plm-generate")
        self.wakeup = None
        self.stats = {"requests": 0, "texts": 0, "batches": 0, "largest_batch": 0, "mixed_batches": 0}
        self._task = None

    def start(self):
        self.wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self):
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    @property
    def queued(self):
        return len(self.queue)

    def submit(self, texts, directions):
        """Queue one request's texts; returns a future of its translations (in order)."""
        if len(self.queue) + len(texts) > self.max_queue:
            raise QueueFull(f"the queue holds {len(self.queue)} texts and takes at most {self.max_queue}; retry later")
        future = asyncio.get_running_loop().create_future()
        request = _Request(len(texts), future)
        now = time.monotonic()
        for i, (t, d) in enumerate(zip(texts, directions)):
            self.queue.append((t, d, request, i, now))
        self.stats["requests"] += 1
        self.wakeup.set()
        return future

    async def _run(self):
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue:
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            # the latency window: wait for more texts until the batch is full or its oldest
            # text has waited batch_window_ms (texts that queued during a batch have waited)
            while len(self.queue) < self.max_batch:
                left = self.queue[0][4] + self.window - time.monotonic()
                if left <= 0:
                    break
                self.wakeup.clear()
                try:
                    await asyncio.wait_for(self.wakeup.wait(), timeout=left)
                except asyncio.TimeoutError:
                    break
            batch = [self.queue.popleft() for _ in range(min(self.max_batch, len(self.queue)))]
            texts, dirs = [b[0] for b in batch], [b[1] for b in batch]
            self.stats["batches"] += 1
            self.stats["texts"] += len(batch)
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch))
            self.stats["mixed_batches"] += len(set(dirs)) > 1
            try:
                outs = await loop.run_in_executor(self.executor, self.translate, texts, dirs)
                error = None
            except Exception as e:  # noqa: BLE001  (reported to the requests of this batch)
                outs, error = None, e
            for k, (_, _, request, i, _) in enumerate(batch):
                if request.future.done():  # the client went away
                    continue
                if error is not None:
                    request.future.set_exception(error)
                    continue
                request.results[i] = outs[k]
                request.left -= 1
                if request.left == 0:
                    request.future.set_result(request.results)


class BadRequest(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def parse_request(body: bytes, translator, limits: Limits):
    """(texts, directions) of a POST /translate body, or BadRequest naming what is wrong."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(400, f"invalid JSON: {e}") from None
    if not isinstance(payload, dict):
        raise BadRequest(400, 'expected a JSON object: {"texts": [...], "direction": "..."}')
    unknown = set(payload) - {"texts", "direction"}
    if unknown:
        raise BadRequest(400, f"unknown field(s) {', '.join(sorted(unknown))}; expected texts and direction")
    texts, direction = payload.get("texts"), payload.get("direction")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise BadRequest(400, '"texts" must be a list of strings')
    if not texts:
        raise BadRequest(400, '"texts" is empty')
    if len(texts) > limits.max_texts:
        raise BadRequest(413, f"{len(texts)} texts in one request; the limit is {limits.max_texts}")
    if isinstance(direction, str):
        directions = [direction] * len(texts)
    elif isinstance(direction, list) and all(isinstance(d, str) for d in direction):
        if len(direction) != len(texts):
            raise BadRequest(400, f'{len(texts)} texts but {len(direction)} entries in "direction"')
        directions = direction
    else:
        raise BadRequest(400, '"direction" must be a string or a list of strings (one per text)')
    known = translator.directions
    for d in dict.fromkeys(directions):
        if d not in known:
            raise BadRequest(400, f"unknown direction {d!r} (known: {', '.join(known)})")
    for i, t in enumerate(texts):
        if not t.strip():
            raise BadRequest(400, f"texts[{i}] is empty")
        if len(t) > limits.max_text_chars:
            raise BadRequest(400, f"texts[{i}] has {len(t)} characters; the limit is {limits.max_text_chars}")
    from .api import TextError

    try:
        translator.encode(texts, directions)  # tokens within each direction's positions
    except TextError as e:
        raise BadRequest(400, f"texts[{e.index}] {e.reason}") from None
    return texts, directions


def create_app(translator, limits: Limits = None):
    """The FastAPI application serving ``translator``."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    limits = limits or Limits()
    limits.check()
    translator.batch_size = limits.max_batch_texts
    batcher = Batcher(translator.translate, limits.max_batch_texts, limits.batch_window_ms, limits.max_queue_texts)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="fairseq_plm translation", lifespan=lifespan)
    app.state.batcher = batcher

    def error(status, message, **headers):
        return JSONResponse({"error": message}, status_code=status, headers=headers or None)

    @app.get("/health")
    async def health():
        return {"status": "ok",
                "directions": {n: {"model": type(d.model).__name__, "plm": d.plm_path, "kind": d.kind}
                               for n, d in ((n, translator.direction(n)) for n in translator.directions)},
                "queued_texts": batcher.queued, "stats": dict(batcher.stats)}

    @app.post("/translate")
    async def translate(request: Request):
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_request_bytes:
            return error(413, f"request body of {declared} bytes; the limit is {limits.max_request_bytes}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limits.max_request_bytes:
                return error(413, f"request body over {limits.max_request_bytes} bytes")
        try:
            texts, directions = parse_request(bytes(body), translator, limits)
        except BadRequest as e:
            return error(e.status, str(e))
        try:
            future = batcher.submit(texts, directions)
        except QueueFull as e:
            return error(503, str(e), **{"Retry-After": "1"})
        try:
            translations = await future
        except FairseqPLMError as e:
            return error(400, str(e))
        except Exception as e:  # noqa: BLE001
            return error(500, f"translation failed: {type(e).__name__}: {e}")
        return {"translations": translations}

    return app


def serve(translator, limits: Limits, host="127.0.0.1", port=8000, log_level="warning", on_ready=None):
    """Run the service until interrupted (uvicorn)."""
    import logging

    import uvicorn

    logging.getLogger("asyncio").setLevel(logging.WARNING)  # fairseq's logging set-up lets DEBUG through

    app = create_app(translator, limits)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False)
    server = uvicorn.Server(config)
    if on_ready is not None:
        def watch():
            while not server.started and not server.should_exit:
                time.sleep(0.05)
            if server.started:
                on_ready(server)
        threading.Thread(target=watch, daemon=True).start()
    server.run()

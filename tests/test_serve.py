"""fairseq-plm-serve through real HTTP requests on 127.0.0.1: translations equal the Python API's,
concurrent requests are batched (directions mixed) without losing or reordering a text, and
every bad request gets a 4xx with a one-line message."""

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from fairseq_plm import Translator  # noqa: E402
from fairseq_plm.server import Batcher, Limits, QueueFull  # noqa: E402

SETTINGS = {"beam": 2, "max_len_b": 10}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url, payload=None, raw=None, method=None, headers=None):
    """(status, JSON body) of one HTTP request."""
    data = raw if raw is not None else (None if payload is None else json.dumps(payload).encode())
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def server(prompt_sets):
    c = prompt_sets["ckpts"]
    port = free_port()
    # the command behind the fairseq-plm-serve console script
    cmd = [sys.executable, "-m", "fairseq_plm.cli.serve", "--cpu", "--port", str(port), "--beam", "2",
           "--max-len-b", "10", "--direction", f"msp={c['msp']}", "--direction", f"ptune={c['ptune']}",
           "--direction", f"sga={c['sga']},iter_decode_max_iter=3", "--max-texts", "8", "--max-text-chars", "2000",
           "--max-request-bytes", "4000", "--batch-window-ms", "300", "--max-batch-texts", "16"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"fairseq-plm-serve exited: {proc.stderr.read()[-3000:]}")
            try:
                if call(url + "/health")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.time() > deadline:
                raise AssertionError("fairseq-plm-serve did not come up")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def expected(prompt_sets):
    c = prompt_sets["ckpts"]
    t = Translator(device="cpu")
    t.add_direction("msp", c["msp"], **SETTINGS)
    t.add_direction("ptune", c["ptune"], **SETTINGS)
    t.add_direction("sga", c["sga"], iter_decode_max_iter=3)
    return t


def test_health_and_translation(server, expected):
    status, health = call(server + "/health")
    assert status == 200 and health["status"] == "ok"
    assert sorted(health["directions"]) == ["msp", "ptune", "sga"]
    texts = ["Open the file", "Save all", "Directory not empty"]
    status, body = call(server + "/translate", {"texts": texts, "direction": "sga"})
    assert status == 200 and body == {"translations": expected.translate(texts, "sga")}
    status, body = call(server + "/translate", {"texts": texts, "direction": ["msp", "sga", "ptune"]})
    assert body["translations"] == expected.translate(texts, ["msp", "sga", "ptune"])


def test_concurrent_requests_are_batched_and_keep_every_text_in_order(server, expected, prompt_sets):
    with open(os.path.join(prompt_sets["raw"], "test.en"), encoding="utf-8") as f:
        src = [line.strip() for line in f]
    names = ["msp", "ptune", "sga"]
    requests = [([src[(i + j) % len(src)] for j in range(1 + i % 3)], names[i % 3]) for i in range(12)]
    before = call(server + "/health")[1]["stats"]
    results = [None] * len(requests)

    def client(i):
        results[i] = call(server + "/translate", {"texts": requests[i][0], "direction": requests[i][1]})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(requests))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for (texts, direction), (status, body) in zip(requests, results):
        assert status == 200
        assert body["translations"] == expected.translate(texts, direction)
    stats = call(server + "/health")[1]["stats"]
    assert stats["requests"] - before["requests"] == len(requests)
    assert stats["texts"] - before["texts"] == sum(len(t) for t, _ in requests)
    assert stats["batches"] - before["batches"] < len(requests)  # requests shared batches...
    assert stats["mixed_batches"] > before["mixed_batches"]      # ...across directions


@pytest.mark.parametrize("payload,raw,status,message", [
    (None, b"{not json", 400, "invalid JSON"),
    (None, b"[1, 2]", 400, "expected a JSON object"),
    ({"texts": ["a"]}, None, 400, '"direction" must be a string'),
    ({"texts": "Save all", "direction": "msp"}, None, 400, '"texts" must be a list of strings'),
    ({"texts": [], "direction": "msp"}, None, 400, '"texts" is empty'),
    ({"texts": ["Save all", " "], "direction": "msp"}, None, 400, "texts[1] is empty"),
    ({"texts": ["Save all"], "direction": "fr"}, None, 400, "unknown direction 'fr' (known: msp, ptune, sga)"),
    ({"texts": ["a", "b"], "direction": ["msp"]}, None, 400, '2 texts but 1 entries in "direction"'),
    ({"texts": ["x" * 2001], "direction": "msp"}, None, 400, "texts[0] has 2001 characters; the limit is 2000"),
    ({"texts": ["ok", "word " * 400], "direction": "sga"}, None, 400, "tokens long; direction 'sga' reads at most"),
    ({"texts": ["a"] * 9, "direction": "msp"}, None, 413, "9 texts in one request; the limit is 8"),
    ({"texts": ["a"], "direction": "msp", "extra": 1}, None, 400, "unknown field(s) extra"),
    (None, json.dumps({"texts": ["a" * 600] * 8, "direction": "msp"}).encode(), 413, "the limit is 4000"),
])
def test_bad_requests_get_a_4xx_with_a_clear_message(server, payload, raw, status, message):
    got, body = call(server + "/translate", payload, raw=raw)
    assert got == status and message in body["error"], body
    assert "\n" not in body["error"]


def test_oversized_body_without_content_length_is_refused(server):
    """A chunked body (no Content-Length) is cut off at the limit while it streams in."""
    import http.client

    host, port = server.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    body = iter([b'{"texts": ["', b"a" * 3000, b"a" * 3000, b'"], "direction": "msp"}'])
    conn.request("POST", "/translate", body=body, headers={"Content-Type": "application/json"},
                 encode_chunked=True)
    r = conn.getresponse()
    assert r.status == 413 and "over 4000 bytes" in json.loads(r.read())["error"]


def test_listens_on_localhost_by_default():
    from fairseq_plm.cli.serve import parser

    assert parser().parse_args(["--direction", "de=ckpt.pt"]).host == "127.0.0.1"


def test_batcher_bounds_its_queue_and_answers_in_order():
    """The queue bound (503 in the server) and order within and across requests."""
    done = []

    def translate(texts, dirs):
        done.append(len(texts))
        return [f"{d}:{t}" for t, d in zip(texts, dirs)]

    async def run():
        b = Batcher(translate, max_batch_texts=4, batch_window_ms=50, max_queue_texts=6)
        b.start()
        f1 = b.submit(["a", "b", "c"], ["x", "y", "x"])
        f2 = b.submit(["d", "e", "f"], ["y", "y", "x"])
        with pytest.raises(QueueFull, match="takes at most 6"):
            b.submit(["g"], ["x"])
        r1, r2 = await f1, await f2
        await b.stop()
        return r1, r2

    r1, r2 = asyncio.run(run())
    assert r1 == ["x:a", "y:b", "x:c"] and r2 == ["y:d", "y:e", "x:f"]
    assert done == [4, 2]  # the first batch was full; the rest followed
    with pytest.raises(Exception, match="could never be queued"):
        Limits(max_texts=10, max_queue_texts=5).check()

"""compat item 5: a CPU training step hands the heap memory it freed back to the system."""

import ctypes
import types

import pytest
import torch

from fairseq_plm import compat

release = compat.release_freed_heap
needs_glibc = pytest.mark.skipif(release._trim is None, reason="needs glibc's malloc_trim and /proc")


def _freed_heap(blocks=6400, size=64 << 10):
    """Leaves blocks / 2 * size (200 MiB) of freed, resident memory inside glibc's heap, as a
    training step's freed activations do: blocks below glibc's mmap threshold, every other
    one freed, so that the live ones keep the holes from coalescing into the top of the heap,
    which glibc trims by itself. Returns (libc, the live blocks)."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    held = [libc.malloc(size) for _ in range(blocks)]
    for b in held:
        ctypes.memset(b, 1, size)  # resident
    for b in held[1::2]:
        libc.free(b)
    return libc, held[::2]


@needs_glibc
def test_release_returns_freed_heap_pages():
    libc, live = _freed_heap()
    before = release.resident()
    assert release(force=True)
    after = release.resident()
    assert before - after > 150 << 20, (before, after)  # of the 200 MiB freed and retained
    for b in live:
        libc.free(b)


@needs_glibc
def test_release_is_due_above_a_share_of_memory_after_growth(monkeypatch):
    release(force=True)
    monkeypatch.setattr(compat, "HEAP_RELEASE_SHARE", 0.0)
    monkeypatch.setattr(compat, "HEAP_RELEASE_BYTES", 1 << 40)
    assert not release()  # nothing has grown by 1 TiB
    monkeypatch.setattr(compat, "HEAP_RELEASE_BYTES", 64 << 20)
    held = torch.ones(128 << 20, dtype=torch.uint8)  # resident memory grows by 128 MiB
    monkeypatch.setattr(compat, "HEAP_RELEASE_SHARE", 2.0)
    assert not release()  # the process holds far less than twice the machine's memory
    monkeypatch.setattr(compat, "HEAP_RELEASE_SHARE", 0.0)
    assert release()
    assert release.baseline >= release.resident() - (16 << 20)  # the new baseline includes `held`
    assert not release()  # no growth since
    del held


def test_trainer_steps_release_on_cpu_only(monkeypatch):
    from fairseq.trainer import Trainer

    assert getattr(Trainer.train_step, compat.MARKER, False)  # applied on import of the package
    calls = []
    monkeypatch.setattr(compat, "release_freed_heap", lambda: calls.append(1))
    step = compat._releasing_heap_on_cpu(lambda self, samples: ("logs", samples))
    cpu, cuda = (types.SimpleNamespace(device=torch.device(d)) for d in ("cpu", "cuda"))
    assert step(cpu, [1]) == ("logs", [1]) and calls == [1]
    assert step(cuda, [2]) == ("logs", [2]) and calls == [1]

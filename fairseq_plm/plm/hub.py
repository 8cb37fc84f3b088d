"""``--plm org/name[@revision]``: PLMs named by their Hugging Face Hub id.

An id resolves through ``huggingface_hub`` and its standard cache (``$HF_HUB_CACHE``, else
``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``): online, only the files the loader reads are
downloaded (``config.json``, one weights format -- safetensors when the repository has it, else
``pytorch_model.bin`` -- and the tokenizer files; never TF/Flax/ONNX weights); offline
(``HF_HUB_OFFLINE=1``, or the Hub unreachable) the cached snapshot is used. The result is the
snapshot directory, which the loaders read like any local directory.

A local path wins over an id of the same spelling, and a preset name (``mgpt``, ``gpt2``...) over
both; ids need their organisation (``openai-community/gpt2``, not ``gpt2``).

``pinned_plm_path`` turns an id into ``org/name@<commit>`` (and a directory into an absolute path):
what checkpoints record, so generation on another machine resolves the very same files.
"""

import fnmatch
import os
import re
from dataclasses import dataclass
from typing import List, Optional

from .config import PRESETS
from .errors import FairseqPLMError

HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>[\w./-]+))?$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
FILE_SUFFIXES = (".txt", ".model", ".json", ".pt", ".bin", ".safetensors")  # missing files, not ids

CONFIG_FILES = ("config.json",)
TOKENIZER_FILES = ("spiece.model", "sentencepiece.bpe.model", "vocab.txt", "dict.txt")
# one weights format, in the loader's order of preference; shards follow their index
WEIGHT_CHOICES = (
    ("model.safetensors", ()),
    ("model.safetensors.index.json", ("model-*-of-*.safetensors",)),
    ("pytorch_model.bin", ()),
    ("pytorch_model.bin.index.json", ("pytorch_model-*-of-*.bin",)),
    ("model.pt", ()),  # a fairseq RoBERTa/XLM-R checkpoint
)


class HubError(FairseqPLMError):
    pass


@dataclass
class HubPLM:
    repo_id: str
    revision: str  # as asked ("main" by default)
    commit: str  # the commit the snapshot is at
    path: str  # the snapshot directory in the cache

    @property
    def pinned(self) -> str:
        return f"{self.repo_id}@{self.commit}"


def parse_hub_id(spec: str):
    """(repo_id, revision or None) if ``spec`` reads as a Hub id and is no local path or preset."""
    if not isinstance(spec, str) or spec in PRESETS or os.path.exists(spec):
        return None
    m = HUB_ID.match(spec)
    if m is None or spec.startswith((".", "/", "~")) or m.group("repo").endswith(FILE_SUFFIXES):
        return None
    return m.group("repo"), m.group("revision")


def is_hub_id(spec: str) -> bool:
    return parse_hub_id(spec) is not None


def cache_dir() -> Optional[str]:
    """The hub cache, read from the environment at call time (None: huggingface_hub's default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def _shown_cache_dir():
    d = cache_dir()
    if d is None:
        from huggingface_hub import constants

        d = constants.HF_HUB_CACHE
    return d


def offline() -> bool:
    truthy = {"1", "on", "yes", "true"}
    if any(os.environ.get(k, "").strip().lower() in truthy for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def files_to_fetch(repo_files: List[str], need_weights: bool = True) -> List[str]:
    """The files of a repository the loaders read: config, tokenizer, one weights format."""
    top = [f for f in repo_files if "/" not in f]
    want = [f for f in top if f in CONFIG_FILES + TOKENIZER_FILES]
    if need_weights:
        for main, shards in WEIGHT_CHOICES:
            if main in top:
                want.append(main)
                want += [f for f in top if any(fnmatch.fnmatch(f, p) for p in shards)]
                break
    return want


_RESOLVED = {}


def resolve(spec: str, need_weights: bool = True) -> HubPLM:
    """Snapshot directory of a Hub id, downloading what is missing unless offline."""
    parsed = parse_hub_id(spec)
    if parsed is None:
        raise HubError(f"{spec!r} is not a Hugging Face Hub id (org/name[@revision])")
    key = (spec, need_weights, cache_dir())
    if key not in _RESOLVED:
        _RESOLVED[key] = _resolve(*parsed, need_weights=need_weights, spec=spec)
    return _RESOLVED[key]


def _resolve(repo_id, revision, need_weights, spec):
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise HubError(f"{spec}: no such local path, and Hub ids need the huggingface_hub package "
                       f"(pip install huggingface_hub)") from None
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    rev = revision or "main"
    why_offline = "HF_HUB_OFFLINE=1"
    if not offline():
        try:
            info = HfApi().model_info(repo_id, revision=rev)
            want = files_to_fetch([s.rfilename for s in info.siblings or []], need_weights)
            if not any(f in want for f in CONFIG_FILES + ("model.pt",)):
                raise HubError(f"Hub id {spec}: the repository has neither config.json nor model.pt "
                               f"(files: {', '.join(s.rfilename for s in info.siblings or [])[:300]})")
            path = snapshot_download(repo_id, revision=rev, allow_patterns=want, cache_dir=cache_dir())
            return HubPLM(repo_id, rev, os.path.basename(os.path.normpath(path)), path)
        except GatedRepoError:
            raise HubError(f"Hub id {spec}: the repository is gated; accept its terms on huggingface.co and log "
                           f"in (hf auth login, or HF_TOKEN)") from None
        except RevisionNotFoundError:
            raise HubError(f"Hub id {spec}: the repository has no revision {rev!r}") from None
        except RepositoryNotFoundError:
            raise HubError(f"{spec}: no such local path, and no such model repository on the Hugging Face "
                           f"Hub (or it is private: log in with hf auth login, or HF_TOKEN)") from None
        except HubError:
            raise
        except (HfHubHTTPError, OSError, ValueError) as e:  # no network, Hub down, proxy...
            why_offline = f"the Hub cannot be reached ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        except Exception as e:  # httpx/requests connection errors are not OSErrors
            if "connect" not in type(e).__name__.lower() and "timeout" not in type(e).__name__.lower():
                raise
            why_offline = f"the Hub cannot be reached ({type(e).__name__})"
    # the cached snapshot: refs/<rev> (or the commit itself) -> snapshots/<commit>. Not
    # snapshot_download(local_files_only=True): after a download of selected files it calls the
    # snapshot incomplete, since the repository's listing has more (TF/Flax weights...)
    path = _cached_snapshot(repo_id, rev)
    where = f"the Hugging Face cache ({_shown_cache_dir()})"
    if path is None:
        raise HubError(
            f"{spec}: no such local path; as a Hugging Face Hub id: {why_offline} and {where} has "
            f"no snapshot of {repo_id} at {rev!r}; run once online, or use a local copy"
        )
    if need_weights and not any(os.path.exists(os.path.join(path, main)) for main, _ in WEIGHT_CHOICES):
        raise HubError(f"{spec}: {why_offline} and the cached snapshot {path} has no weights file (only "
                       f"config/tokenizer files were fetched); run once online, or use a local copy")
    return HubPLM(repo_id, rev, os.path.basename(os.path.normpath(path)), path)


def _cached_snapshot(repo_id, rev):
    from huggingface_hub import try_to_load_from_cache

    for name in CONFIG_FILES + ("model.pt",):
        found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir(), revision=rev)
        if isinstance(found, str):
            return os.path.dirname(found)
    return None


def local_plm_path(spec: str, need_weights: bool = True) -> str:
    """A local path for ``spec``: Hub ids become their snapshot directory, anything else is
    returned as it is (paths, presets)."""
    return resolve(spec, need_weights).path if is_hub_id(spec) else spec


def pinned_plm_path(spec: str) -> str:
    """What a checkpoint records for ``--plm``: an absolute directory, a Hub id pinned to the
    commit it resolved to, or the spec itself (presets, files)."""
    if os.path.isdir(spec):
        return os.path.abspath(spec)
    parsed = parse_hub_id(spec)
    if parsed is not None:
        hub = resolve(spec, need_weights=False)
        return hub.pinned if COMMIT.match(hub.commit) else spec
    return spec

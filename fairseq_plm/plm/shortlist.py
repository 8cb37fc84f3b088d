"""Output shortlists: score only the pieces a task can output instead of a PLM's whole vocabulary.

A translation model over mGPT or XLM-R writes one or a few languages, yet its output layer
scores all ~250K pieces at every position; at mGPT's shape that costs about as much as the
whole body per position. ``--output-shortlist`` restricts the output layer to the pieces the
target side can use (the standard remedy of large-vocabulary NMT):

  ``none``  (default) the full vocabulary;
  ``auto``  every piece that occurs in the binarized training targets of the data directory
            (``train*.{src}-{tgt}.{tgt}``, all ``:``-separated data shards), counted once at
            ``build_model`` time;
  FILE      the pieces listed in FILE, one per line (the first whitespace-separated field, so
            a fairseq ``dict.txt`` works too); lines starting with ``#`` are skipped.

The method's special symbols are always kept, as are all ids up to the highest of
pad/eos/unk/bos (so those keep their own id as their position: fairseq's ``ignore_index`` and
the beam search's pad/eos/unk handling need no remapping); SGA and CTC-NAT also keep their CTC
blank (``<mask>``). The shortlist is stored in the checkpoint (``*.output_shortlist.ids``), so
decoding uses exactly the training shortlist whatever data directory it is given.

Semantics ("the full vocabulary restricted the same way"): scores over the shortlist equal the
full vocabulary's scores with every other piece masked to -inf. Training targets are mapped to
shortlist positions (a target outside the shortlist, e.g. in a valid set, is scored as
``<unk>``; ``auto`` built from the training targets has none in training); label smoothing
spreads over the shortlist. Decoding (beam search, CTC collapse, Mask-Predict) picks among the
shortlist only, and fairseq's beam search receives full-vocabulary log-probabilities with -inf
outside the shortlist.
"""

import logging
import os
from typing import Iterable, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import FairseqPLMError

logger = logging.getLogger(__name__)

SHORTLIST_HELP = ("score only these output pieces: none (the full vocabulary), auto (the pieces of the "
                  "binarized training targets in the data directory) or FILE (one piece per line); "
                  "special symbols are always kept; stored in the checkpoint")


class OutputShortlist(nn.Module):
    """A sorted set of K output ids (buffer ``ids``, saved with the model) and what a model
    needs to score, train and decode with it. ``source`` says where it came from (logs)."""

    def __init__(self, ids: Optional[torch.Tensor], vocab_size: int, source: str = ""):
        super().__init__()
        self.vocab_size = vocab_size
        self.source = source
        self.register_buffer("ids", torch.zeros(0, dtype=torch.long) if ids is None else ids.long())
        self._rows = None  # (key, weight rows, bias rows) of a frozen output layer

    def __len__(self):
        return self.ids.numel()

    def extra_repr(self):
        return f"{len(self)} of {self.vocab_size} pieces"

    def _check_ready(self):
        if self.ids.numel() == 0:
            raise FairseqPLMError(
                f"--output-shortlist {self.source}: no pieces (no training targets to build it from, and "
                f"no checkpoint supplied one); pass --output-shortlist none or a file of pieces")

    # ---------------------------------------------------------------- scoring

    def rows(self, weight, bias=None):
        """(weight[ids], bias[ids]): the output layer restricted to the shortlist. For a frozen
        layer the gathered rows are kept and reused until the weights change (another device or
        dtype, or an in-place update), so decoding does not copy K x d values at every step."""
        self._check_ready()
        if weight.requires_grad or (bias is not None and bias.requires_grad):
            return weight.index_select(0, self.ids), None if bias is None else bias.index_select(0, self.ids)
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device,
               None if bias is None else (bias.data_ptr(), bias._version, bias.dtype), self.ids.data_ptr(),
               self.ids._version)
        if self._rows is None or self._rows[0] != key:
            self._rows = (key, weight.index_select(0, self.ids),
                          None if bias is None else bias.index_select(0, self.ids))
        return self._rows[1], self._rows[2]

    def logits(self, hidden, weight, bias=None):
        """[..., K] scores: hidden @ weight[ids]^T (+ bias[ids])."""
        w, b = self.rows(weight, bias)
        return F.linear(hidden, w, b)

    # ---------------------------------------------------------------- id <-> position

    def positions(self):
        """[V] long: the shortlist position of every id, -1 outside (kept until ids change)."""
        key = (self.ids.data_ptr(), self.ids._version, self.ids.device)
        if getattr(self, "_positions", None) is None or self._positions[0] != key:
            pos = torch.full((self.vocab_size,), -1, dtype=torch.long, device=self.ids.device)
            self._positions = (key, pos.index_copy_(0, self.ids, torch.arange(len(self), device=self.ids.device)))
        return self._positions[1]

    def to_positions(self, tokens, unk):
        """Vocabulary ids -> shortlist positions; ids outside the shortlist map to ``unk``'s."""
        pos = self.positions()
        mapped = pos[tokens]
        return torch.where(mapped >= 0, mapped, pos[unk])

    def position_of(self, token_id):
        pos = self.positions()[token_id]
        if int(pos) < 0:
            raise ValueError(f"id {token_id} is not in the shortlist")
        return int(pos)

    def to_ids(self, positions):
        """Shortlist positions -> vocabulary ids."""
        return self.ids[positions]

    def expand(self, scores, fill=float("-inf")):
        """[..., K] -> [..., V]: ``fill`` outside the shortlist (log-probabilities: -inf)."""
        out = scores.new_full(scores.shape[:-1] + (self.vocab_size,), fill)
        return out.index_copy_(out.dim() - 1, self.ids, scores)

    # ---------------------------------------------------------------- checkpoints

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """A checkpoint's shortlist replaces the one built from the command line (its size may
        differ): decoding uses exactly the pieces the model was trained on."""
        key = prefix + "ids"
        if key in state_dict:
            saved = state_dict[key]
            self.ids = saved.detach().to(device=self.ids.device, dtype=torch.long).clone()
            self._rows = None
            if self.source and self.source != "checkpoint":
                logger.info(f"output shortlist: {len(self)} pieces from the checkpoint")
            self.source = "checkpoint"
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


# -------------------------------------------------------------------- building

def kept_specials(dictionary, extra: Iterable[int] = ()):
    """Ids every shortlist keeps: 0..max(pad, eos, unk, bos) (so those keep their own id as
    position) and ``extra`` (e.g. the CTC blank)."""
    top = max(dictionary.pad(), dictionary.eos(), dictionary.unk(), dictionary.bos())
    return set(range(top + 1)) | {int(i) for i in extra if i is not None and i >= 0}


def _train_target_files(data, src, tgt):
    """Binarized target files of every training shard: train, train1, train2 ... under each
    ``:``-separated data directory (fairseq's naming, both pair directions)."""
    files = []
    for root in data.split(":"):
        k = 0
        while True:
            split = "train" if k == 0 else f"train{k}"
            found = None
            for pair in (f"{src}-{tgt}", f"{tgt}-{src}"):
                base = os.path.join(root, f"{split}.{pair}.{tgt}")
                if os.path.exists(base + ".bin") and os.path.exists(base + ".idx"):
                    found = base
                    break
            if found is None:
                break
            files.append(found)
            k += 1
    return files


def ids_in_binarized(path, vocab_size):
    """Every id that occurs in a fairseq mmap-binarized dataset (``path``.bin/.idx)."""
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    ds = MMapIndexedDataset(path)
    tokens = np.frombuffer(ds._bin_buffer, dtype=ds._index.dtype)
    counts = np.bincount(tokens.astype(np.int64), minlength=vocab_size)
    if counts.size > vocab_size:
        raise FairseqPLMError(f"{path}.bin holds id {counts.size - 1}, beyond the {vocab_size} pieces of the "
                              f"dictionary: binarize with this PLM's dictionary")
    return set(np.nonzero(counts)[0].tolist())


def ids_in_file(path, dictionary):
    """Ids of the pieces listed in a shortlist file (first field per line)."""
    ids = set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            fields = line.rstrip("\n").split()
            if not fields or fields[0].startswith("#"):
                continue
            piece = fields[0]
            i = dictionary.indices.get(piece)
            if i is None:
                raise FairseqPLMError(f"{path}, line {n}: {piece!r} is not a piece of the PLM's vocabulary")
            ids.add(i)
    return ids


def build_output_shortlist(spec, dictionary, data=None, source_lang=None, target_lang=None,
                           extra_specials: Iterable[int] = ()) -> Optional[OutputShortlist]:
    """``--output-shortlist`` -> an ``OutputShortlist`` over ``dictionary`` (None for ``none``).

    A missing training split (``auto``) or file gives an empty shortlist with a warning: a
    checkpoint being loaded fills it (``fairseq-generate`` on a data directory with only the
    test split); using it unfilled is an error."""
    if spec is None or spec == "none":
        return None
    v = len(dictionary)
    keep = kept_specials(dictionary, extra_specials)
    if spec == "auto":
        files = _train_target_files(data, source_lang, target_lang) if data else []
        if not files:
            logger.warning(f"--output-shortlist auto: no binarized training targets under {data} "
                           f"(train.{source_lang}-{target_lang}.{target_lang}.bin); the checkpoint must supply it")
            return OutputShortlist(None, v, source="auto")
        ids = set()
        for path in files:
            ids |= ids_in_binarized(path, v)
        where = ", ".join(files)
    else:
        if not os.path.exists(spec):
            if os.path.sep not in spec and not spec.endswith((".txt", ".tsv")):
                raise FairseqPLMError(f"--output-shortlist {spec}: expected none, auto or a file of pieces")
            logger.warning(f"--output-shortlist {spec}: file not found; the checkpoint must supply the shortlist")
            return OutputShortlist(None, v, source=spec)
        ids = ids_in_file(spec, dictionary)
        where = spec
    ids = torch.tensor(sorted(ids | keep), dtype=torch.long)
    logger.info(f"output shortlist: {ids.numel()} of {v} pieces ({where})")
    return OutputShortlist(ids, v, source=spec)


def shortlist_from_ids(ids, dictionary, extra_specials: Iterable[int] = ()) -> OutputShortlist:
    """An ``OutputShortlist`` from ids (benchmarks, tests), specials added."""
    ids = {int(i) for i in ids} | kept_specials(dictionary, extra_specials)
    return OutputShortlist(torch.tensor(sorted(ids), dtype=torch.long), len(dictionary), source="ids")


def normalized_probs(scores, shortlist, log_probs, full_vocab):
    """(log-)softmax of shortlist scores [..., K], over the shortlist; with ``full_vocab`` as
    [..., V] with probability 0 (-inf) outside it."""
    scores = scores.float()
    out = F.log_softmax(scores, dim=-1) if log_probs else F.softmax(scores, dim=-1)
    if full_vocab:
        out = shortlist.expand(out, float("-inf") if log_probs else 0.0)
    return out

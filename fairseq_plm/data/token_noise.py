"""Token-level noise on a PLM's vocabulary: BERT's masked-LM corruption and the synthetic
negatives of deep fusion's target sentence prediction. Randomness comes from torch's global
generator, which fairseq's trainer reseeds at every update (seed + update number), so a
resumed run draws exactly what an uninterrupted one would."""

from typing import List, Tuple

import torch

SWAP, REPLACE, DELETE = 0, 1, 2


def word_id_range(dictionary) -> Tuple[int, int]:
    """[low, high): the ids of ordinary tokens, for random replacements. Special symbols sit at
    the start of mBERT's (``[PAD]`` .. ``[MASK]`` = 0..103) and XLM-R's (0..3, ``<mask>`` last)
    vocabularies."""
    size = len(dictionary)
    mask = getattr(dictionary, "mask_index", None)
    specials = [dictionary.pad(), dictionary.bos(), dictionary.eos(), dictionary.unk()]
    if mask is not None and mask < size - 1:
        specials.append(mask)
    high = size - 1 if mask == size - 1 else size
    return max(specials) + 1, high


def _other_token(token: int, low: int, high: int) -> int:
    """A random ordinary token different from ``token``."""
    if not low <= token < high:
        return int(torch.randint(low, high, ()))
    r = int(torch.randint(low, high - 1, ()))
    return r + 1 if r >= token else r


def corrupt_words(tokens: List[int], low: int, high: int, ratio: float = 0.5) -> List[int]:
    """Deep fusion, target sentence prediction (TSP): a synthetic negative of ``tokens``.

    ``ratio`` of the words (at least one) are chosen, and each is, with equal chance, swapped
    with another word of the sentence, replaced by a random word from [low, high), or deleted.
    The result "has similar words to the target sentence but not its meaning"; it always
    differs from ``tokens`` (should the draws leave it unchanged, e.g. by swapping two equal
    words, one word is replaced)."""
    n = len(tokens)
    if n == 0:
        raise ValueError("cannot corrupt an empty sentence")
    out = list(tokens)
    k = max(1, int(round(ratio * n)))
    chosen = torch.randperm(n)[:k].tolist()
    ops = torch.randint(3, (k,)).tolist()
    deleted = set()
    for i, op in zip(chosen, ops):
        if op == SWAP and n > 1:
            j = (i + 1 + int(torch.randint(n - 1, ()))) % n  # any other position
            out[i], out[j] = out[j], out[i]
        elif op == DELETE:
            deleted.add(i)
        else:  # REPLACE (and SWAP in a one-word sentence)
            out[i] = _other_token(out[i], low, high)
    out = [t for i, t in enumerate(out) if i not in deleted]
    if out == list(tokens):
        i = int(torch.randint(n, ()))
        out[i] = _other_token(out[i], low, high)
    return out


def bert_mask(tokens, maskable, mask_index: int, low: int, high: int, prob: float = 0.15):
    """BERT's MLM input (Devlin et al. 2019): each ``maskable`` position is chosen with
    probability ``prob`` (at least one per sentence that has any); a chosen position becomes
    ``mask_index`` (80%), a random ordinary token (10%) or stays (10%).

    Returns (inputs, chosen): the corrupted [B, T] ids and the [B, T] bool of chosen positions,
    whose original ids are the MLM targets."""
    r = torch.rand(tokens.shape, device=tokens.device)
    chosen = (r < prob) & maskable
    missing = maskable.any(dim=1) & ~chosen.any(dim=1)
    if missing.any():  # short sentences: mask their most likely position anyway
        first = r.masked_fill(~maskable, 2.0).argmin(dim=1)
        chosen[missing, first[missing]] = True
    action = torch.rand(tokens.shape, device=tokens.device)
    random_tokens = torch.randint(low, high, tokens.shape, device=tokens.device)
    inputs = torch.where(chosen & (action < 0.8), torch.full_like(tokens, mask_index), tokens)
    inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_tokens, inputs)
    return inputs, chosen

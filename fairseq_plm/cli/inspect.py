"""``fairseq-plm-inspect``: what is this file, and can I use it?

    fairseq-plm-inspect PLM                       # a directory, Hub id (org/name[@revision]) or preset
    fairseq-plm-inspect CHECKPOINT.pt [--plm PLM]  # a checkpoint of this package

For a PLM: the format and layout found (weights file, storage, dtypes, name prefix, legacy names,
tensors ignored), family, shape, parameter count, special token ids, the tokenizer's pieces for a
sample sentence, the weights fingerprint, and which methods of this package accept it. Presets are
shown with the random weights ``--plm-random-init`` gives them.

For a checkpoint: method, architecture and task, trained parameters, training updates, the PLM it
was trained on (as recorded: an absolute path, or a Hub id pinned to a commit) and its fingerprint;
with ``--plm``, whether that PLM is the one (exit status 1 if not).

Bad files get the same one-line errors as the loaders.
"""

import argparse
import os
import sys

import torch

from ..plm.errors import FairseqPLMError, command

# the methods of this package and the PLM families they take (models/*.py build_model)
METHODS = (
    ("MSP, prompt tuning, prefix tuning (msp*, prompt_tuning, prefix_tuning)", ("gpt2",), "a causal GPT"),
    ("SGA (sga*)", ("roberta", "bert"), "a bidirectional MLM encoder (XLM-R)"),
    ("deep fusion (deep_fusion*)", ("bert", "roberta"), "a BERT-style encoder (mBERT)"),
    ("MPT (mpt, mpt_sp, mpt_ft)", ("roberta", "bert"), "an MLM encoder (XLM-R)"),
)
FAMILIES = {"gpt2": "causal GPT-2 layout", "bert": "BERT layout (token types)",
            "roberta": "RoBERTa/XLM-R layout, positions from padding_idx + 1"}
SAMPLE = "The quick brown fox jumps over the lazy dog. Der schnelle Fuchs."


def fingerprint_hex(fp) -> str:
    if torch.is_tensor(fp):
        return bytes(fp.flatten().to(torch.uint8).tolist()).hex()
    if isinstance(fp, (bytes, bytearray)):
        return bytes(fp).hex()
    return str(fp)


def _show(rows):
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")


def _special(d, i):
    return "-" if i is None or i < 0 else f"{i} {d.symbols[i]!r}"


def plm_rows(spec, sample, random_init=False, seed=1):
    """Report lines for a PLM, and the loaded model."""
    from ..plm.config import PRESETS
    from ..plm.frozen import fingerprint
    from ..plm.hub import is_hub_id, resolve
    from ..plm.loading import Layout, load_plm
    from ..plm.vocab import VocabularyError, load_dictionary, make_encoder, tokenizer_file

    rows = []
    random_init = random_init or spec in PRESETS
    if is_hub_id(spec):
        hub = resolve(spec, need_weights=not random_init)
        rows.append(("PLM", f"{spec} (Hub id) -> {hub.pinned}, cached at {hub.path}"))
        local = hub.path
    else:
        local = spec
        rows.append(("PLM", spec if spec in PRESETS else os.path.abspath(spec)))
    layout = Layout()
    model = load_plm(spec, random_init=random_init, seed=seed, layout=layout)
    c = model.cfg
    if random_init:
        rows.append(("format", f"{layout.format}; random weights (--plm-random-init, --plm-seed {seed})"))
    else:
        rows.append(("format", layout.describe()))
    rows.append(("family", f"{c.family} ({FAMILIES[c.family]})"))
    rows.append(("shape", f"{c.num_layers} layers, width {c.hidden_size}, {c.num_heads} heads, FFN "
                          f"{c.intermediate_size}, vocabulary {c.vocab_size}, {c.max_positions} positions"
                          + (f" ({c.usable_positions} usable)" if c.position_offset else "")))
    n = sum(p.numel() for p in model.parameters())
    dtypes = ", ".join(f"{k} {v:,}" for k, v in layout.dtypes.items()) or "random"
    rows.append(("parameters", f"{n:,} (in the file: {dtypes}; loaded as "
                               f"{next(model.parameters()).dtype})".replace("torch.", "")))
    tok = None if spec in PRESETS else tokenizer_file(local)
    if tok is None and not (os.path.isdir(local) and os.path.exists(os.path.join(local, "dict.txt"))):
        rows.append(("tokenizer", "none found (spiece.model, sentencepiece.bpe.model, vocab.txt or dict.txt)"))
    else:
        try:
            d = load_dictionary(local, family=c.family, vocab_size=c.vocab_size)
            rows.append(("tokenizer", f"{os.path.basename(tok) if tok else 'dict.txt'} ({d.kind} ids, "
                                      f"{len(d)} symbols)"))
            rows.append(("special tokens", f"pad {_special(d, d.pad_index)}, eos {_special(d, d.eos_index)}, "
                                           f"unk {_special(d, d.unk_index)}, bos {_special(d, d.bos_index)}, "
                                           f"mask {_special(d, d.mask_index)}"))
            if tok is not None:
                pieces = make_encoder(local)(sample)
                rows.append(("sample", f"{sample!r} -> {' '.join(pieces)}"))
                rows.append(("sample ids", " ".join(str(d.index(p)) for p in pieces)))
        except VocabularyError as e:
            rows.append(("tokenizer", f"unusable: {e}"))
    rows.append(("fingerprint", fingerprint_hex(fingerprint(model))))
    for name, families, needs in METHODS:
        ok = c.family in families
        rows.append(("method" if name == METHODS[0][0] else "", f"{name}: {'yes' if ok else 'no, needs ' + needs}"))
    return rows, model


def read_checkpoint(path):
    """The raw checkpoint dict, read where the loaders read fairseq ``model.pt`` files."""
    from ..plm.loading import read_fairseq_checkpoint

    return read_fairseq_checkpoint(path, what="checkpoint")


def _cfg_get(cfg, key, default=None):
    try:
        return cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    except Exception:
        return default


def is_package_checkpoint(state) -> bool:
    model_cfg = _cfg_get(state.get("cfg") or {}, "model")
    return model_cfg is not None and _cfg_get(model_cfg, "plm") is not None


def checkpoint_rows(path, state, plm=None):
    """Report lines for a checkpoint of this package; the last says whether ``plm`` matches."""
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    from ..plm.frozen import FINGERPRINT_KEY, fingerprint, is_plm_key
    from ..plm.loading import load_plm

    cfg = state["cfg"]
    model_cfg, task_cfg = cfg["model"], cfg.get("task") or {}
    arch = _cfg_get(model_cfg, "_name") or _cfg_get(model_cfg, "arch")
    rows = [("checkpoint", os.path.abspath(path)),
            ("method", f"{ARCH_MODEL_NAME_REGISTRY.get(arch, arch)} (--arch {arch}, --task "
                       f"{_cfg_get(task_cfg, '_name', '?')})")]
    weights = state["model"]
    prints = {fingerprint_hex(v) for k, v in weights.items() if k.endswith(FINGERPRINT_KEY)}
    trained = [v for k, v in weights.items()
               if torch.is_tensor(v) and v.is_floating_point() and not is_plm_key(k)]
    plm_tensors = [v for k, v in weights.items() if torch.is_tensor(v) and is_plm_key(k)]
    rows.append(("trained params", f"{sum(v.numel() for v in trained):,} in {len(trained)} tensors"
                 + (f" (+ the PLM's {sum(v.numel() for v in plm_tensors):,}, fine-tuned, stored)"
                    if plm_tensors else " (the frozen PLM is not stored)")))
    history = state.get("optimizer_history") or [{}]
    epoch = ((state.get("extra_state") or {}).get("train_iterator") or {}).get("epoch")
    rows.append(("updates", f"{history[-1].get('num_updates', '?')}" + (f" (epoch {epoch})" if epoch else "")))
    recorded = _cfg_get(model_cfg, "plm")
    random_init, seed = bool(_cfg_get(model_cfg, "plm_random_init", False)), _cfg_get(model_cfg, "plm_seed", 1)
    rows.append(("PLM needed", f"{recorded}" + (f" with --plm-random-init --plm-seed {seed}" if random_init else "")))
    rows.append(("PLM fingerprint", ", ".join(sorted(prints)) if prints else "none recorded"))
    match = None
    if plm is not None:
        model = load_plm(plm, random_init=random_init, seed=seed)
        mine = fingerprint_hex(fingerprint(model))
        match = not prints or mine in prints
        rows.append(("--plm " + plm, "matches" if match else f"does NOT match (its fingerprint is {mine})"))
    else:
        rows.append(("", "pass --plm PLM to check a PLM against it"))
    return rows, match


@command("fairseq-plm-inspect")
def main(argv=None):
    p = argparse.ArgumentParser(prog="fairseq-plm-inspect", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("path", help="a PLM (directory, Hub id org/name[@revision], preset) or a checkpoint file")
    p.add_argument("--plm", help="with a checkpoint: check whether this PLM is the one it was trained on")
    p.add_argument("--sample", default=SAMPLE, help="sentence to show the tokenizer's pieces for")
    p.add_argument("--plm-random-init", action="store_true", help="random weights of the PLM's shape")
    p.add_argument("--plm-seed", type=int, default=1)
    args = p.parse_args(argv)
    prog = "fairseq-plm-inspect"
    try:
        path = args.path
        if os.path.isfile(path):
            if path.endswith((".safetensors", ".bin", ".index.json")):
                path = os.path.dirname(os.path.abspath(path))  # a weights file: inspect its PLM directory
            else:
                state = read_checkpoint(path)
                if is_package_checkpoint(state):
                    rows, match = checkpoint_rows(path, state, args.plm)
                    _show(rows)
                    if match is False:
                        sys.exit(1)
                    return
                if os.path.basename(path) != "model.pt":
                    raise FairseqPLMError(f"{path} is neither a checkpoint of this package (no --plm in its "
                                          f"model config) nor a PLM's weights file")
                path = os.path.dirname(os.path.abspath(path))  # a fairseq RoBERTa/XLM-R model.pt
        if args.plm is not None:
            raise FairseqPLMError(f"--plm goes with a checkpoint; {args.path} is a PLM")
        rows, _ = plm_rows(path, args.sample, args.plm_random_init, args.plm_seed)
        _show(rows)
    except (FairseqPLMError, FileNotFoundError) as e:
        sys.exit(f"{prog}: error: {e}")


if __name__ == "__main__":
    main()

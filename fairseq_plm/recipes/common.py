"""Steps shared by recipes and tests."""

import os
import subprocess
import sys

import fairseq_plm

USER_DIR = os.path.dirname(os.path.abspath(fairseq_plm.__file__))
BIN = os.path.dirname(sys.executable)


def run_cli(name, *args, env=None):
    """Run one of this environment's console scripts; raise with its output tail on failure."""
    full_env = dict(os.environ, **(env or {}))
    p = subprocess.run([os.path.join(BIN, name), *map(str, args)], capture_output=True, text=True, env=full_env)
    if p.returncode != 0:
        raise RuntimeError(f"{name} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    return p


def encode_and_binarize(raw, plm, tok, data, src="en", tgt="de", splits=("train", "valid", "test"), workers=1):
    """raw/{split}.{lang} -> PLM tokenizer pieces in tok/ -> fairseq-preprocess into data/,
    with dictionaries whose ids are the PLM's own."""
    os.makedirs(tok, exist_ok=True)
    files = [f"{s}.{l}" for s in splits for l in (src, tgt)]
    run_cli("fairseq-plm-encode", "--tokenizer", plm, "--inputs", *[os.path.join(raw, f) for f in files],
            "--outputs", *[os.path.join(tok, f) for f in files])
    prefs = [a for s, flag in zip(splits, ("--trainpref", "--validpref", "--testpref")) for a in (flag, f"{tok}/{s}")]
    run_cli("fairseq-preprocess", "--user-dir", USER_DIR, "--task", "plm_translation", "-s", src, "-t", tgt, *prefs,
            "--srcdict", plm, "--tgtdict", plm, "--destdir", data, "--workers", workers)


def write_results(out_dir, text, note, rows, args):
    """A recipe's result table: results.md (table + note), results.json (rows + arguments), stdout."""
    import json

    with open(os.path.join(out_dir, "results.md"), "w", encoding="utf-8") as f:
        f.write(text + "\n\n" + note + "\n")
    with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"rows": rows, "args": vars(args)}, f, indent=1)
    print("\n" + text + "\n\n" + note + "\n", flush=True)

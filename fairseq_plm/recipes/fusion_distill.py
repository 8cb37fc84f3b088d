"""Sequence-level knowledge distillation for the non-autoregressive deep-fusion model (deep
fusion Table 3: Mask-Predict setting, "trained on distilled data"): an autoregressive teacher
translates the training set, and ``deep_fusion_cmlm`` is trained on its translations.

    python -m fairseq_plm.recipes.fusion_distill --data DATA_BIN --teacher TEACHER.pt --out DISTILLED_BIN \\
        [--teacher-data DIR --teacher-task translation] [--beam 4] \\
        [--train --plm PTM --save-dir DIR (--max-update N | --minutes M) [--train-extra "..."]]

Steps:

1. ``fairseq-plm-generate`` decodes the training split of ``--teacher-data`` (default
   ``--data``) with the teacher checkpoint, ``--beam`` 4 (Mask-Predict's distillation setting
   is beam search with the AT teacher). The teacher must read the same training sentences in
   the same order and write the same target dictionary as ``--data``: a ``deep_fusion`` model
   trained on ``--data`` itself, or a fairseq Transformer on a ``--task translation``
   binarization of the same tokenized files whose target dictionary is ``--data``'s (as
   ``fusion_compare`` builds its baseline data); both are checked.
2. The teacher's hypotheses (``H-`` lines: target pieces, no detokenization) replace the
   training targets, sentence by sentence (a sentence the teacher left empty keeps its
   reference); they are binarized with ``--data``'s target dictionary and written, with
   ``--data``'s source side and its valid/test splits (references untouched), to ``--out``.
3. ``--train``: ``fairseq-plm-train --task fusion_translation --arch deep_fusion_cmlm`` on
   ``--out`` (``deep_fusion_loss``, label smoothing 0.1, Adam, lr ``--lr``; the
   paper's settings are in examples/fusion/README.md), checkpoints in ``--save-dir``.

Distilled data are written to a temporary directory, then renamed: a killed run leaves
nothing half-written, and a rerun with an existing ``--out`` reuses it.
"""

import argparse
import filecmp
import os
import re
import shlex
import shutil
import sys

from .common import run_cli


def dataset_size(data, split, lang_pair, lang):
    """Number of sentences of a binarized split (its .idx file)."""
    from fairseq.data import data_utils

    ds = data_utils.load_indexed_dataset(os.path.join(data, f"{split}.{lang_pair}.{lang}"), None)
    if ds is None:
        raise FileNotFoundError(f"no binarized {split}.{lang_pair}.{lang} in {data}")
    return len(ds)


def language_pair(data):
    """(src, tgt) from the train.SRC-TGT.SRC.idx file of a binarized directory."""
    for name in sorted(os.listdir(data)):
        m = re.fullmatch(r"train\.([^.-]+)-([^.-]+)\.\1\.idx", name)
        if m:
            return m.group(1), m.group(2)
    raise FileNotFoundError(f"{data} has no binarized training split (train.SRC-TGT.SRC.idx)")


def teacher_hypotheses(generate_stdout, n):
    """{sentence id: hypothesis pieces} from fairseq-generate's H- lines; every id present."""
    hyps = {int(i): h for i, h in re.findall(r"^H-(\d+)\t\S+\t?(.*)$", generate_stdout, flags=re.M)}
    missing = sorted(set(range(n)) - set(hyps))
    if missing:
        raise SystemExit(f"fusion_distill: the teacher translated {n - len(missing)} of {n} training sentences "
                         f"(e.g. id {missing[0]} is missing; --skip-invalid-size-inputs-valid-test drops long "
                         f"ones: remove it, or raise --max-source-positions)")
    return hyps


def reference_pieces(data, pair, tgt, n):
    """The training targets of ``data`` as piece strings (for sentences the teacher left empty)."""
    from fairseq.data import Dictionary, data_utils

    d = Dictionary.load(os.path.join(data, f"dict.{tgt}.txt"))
    ds = data_utils.load_indexed_dataset(os.path.join(data, f"train.{pair}.{tgt}"), d)
    return [d.string(ds[i]) for i in range(n)]


def distill(data, teacher, out, teacher_data=None, teacher_task="fusion_translation", beam=4, batch_size=64,
            max_len_a=1.2, max_len_b=10, cpu=False, gen_extra="", hypotheses_file=None):
    """Steps 1-2 of the module docstring; returns {"sentences", "replaced", "kept_reference"}.
    ``hypotheses_file``: the teacher's hypotheses (one line of pieces per training sentence,
    empty where it wrote nothing) are kept there and reused when it exists, so that one
    teacher decoding serves several data directories."""
    teacher_data = teacher_data or data
    src, tgt = language_pair(data)
    pair = f"{src}-{tgt}"
    if os.path.exists(os.path.join(out, "distill.done")):
        return {"reused": out}
    n = dataset_size(data, "train", pair, src)
    if dataset_size(teacher_data, "train", pair, src) != n:
        raise SystemExit(f"fusion_distill: {teacher_data} and {data} hold different training sets")
    if not filecmp.cmp(os.path.join(data, f"dict.{tgt}.txt"), os.path.join(teacher_data, f"dict.{tgt}.txt"),
                       shallow=False):
        raise SystemExit(f"fusion_distill: the teacher's target dictionary ({teacher_data}/dict.{tgt}.txt) is not "
                         f"{data}/dict.{tgt}.txt: its hypotheses would be other ids")
    if hypotheses_file and os.path.exists(hypotheses_file):
        with open(hypotheses_file, encoding="utf-8") as f:
            hyps = dict(enumerate(f.read().splitlines()))
        if len(hyps) != n:
            raise SystemExit(f"fusion_distill: {hypotheses_file} has {len(hyps)} lines for {n} training sentences")
    else:
        p = run_cli("fairseq-plm-generate", teacher_data, "--task", teacher_task, "-s", src, "-t", tgt, "--path",
                    teacher, "--gen-subset", "train", "--beam", beam, "--max-len-a", max_len_a, "--max-len-b",
                    max_len_b, "--batch-size", batch_size, "--required-batch-size-multiple", "1",
                    *(["--cpu"] if cpu else []), *shlex.split(gen_extra))
        hyps = teacher_hypotheses(p.stdout, n)
        if hypotheses_file:
            with open(hypotheses_file + ".tmp", "w", encoding="utf-8") as f:
                f.writelines(hyps[i].strip() + "\n" for i in range(n))
            os.replace(hypotheses_file + ".tmp", hypotheses_file)
    refs = reference_pieces(data, pair, tgt, n)
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    lines = [hyps[i].strip() or refs[i] for i in range(n)]
    kept = sum(1 for i in range(n) if not hyps[i].strip())
    pieces = os.path.join(tmp, f"distilled.{tgt}")
    with open(pieces, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
    run_cli("fairseq-preprocess", "--only-source", "-s", tgt, "--trainpref", os.path.join(tmp, "distilled"),
            "--srcdict", os.path.join(data, f"dict.{tgt}.txt"), "--destdir", os.path.join(tmp, "bin"),
            "--workers", 1)
    for name in os.listdir(data):  # source side, dictionaries, valid/test: as they are
        if os.path.isfile(os.path.join(data, name)) and not name.startswith(f"train.{pair}.{tgt}."):
            shutil.copyfile(os.path.join(data, name), os.path.join(tmp, name))
    for ext in ("bin", "idx"):  # fairseq-preprocess --only-source names it train.TGT-None.TGT
        os.replace(os.path.join(tmp, "bin", f"train.{tgt}-None.{tgt}.{ext}"), os.path.join(tmp, f"train.{pair}.{tgt}.{ext}"))
    shutil.rmtree(os.path.join(tmp, "bin"))
    with open(os.path.join(tmp, "distill.done"), "w", encoding="utf-8") as f:
        f.write(f"teacher {teacher}\nbeam {beam}\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return {"sentences": n, "replaced": n - kept, "kept_reference": kept}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="binarized fusion_translation data (fairseq-preprocess output)")
    ap.add_argument("--teacher", required=True, help="the AT teacher's checkpoint")
    ap.add_argument("--out", required=True, help="the distilled binarized data (a new directory)")
    ap.add_argument("--teacher-data", help="the data directory the teacher reads (default: --data)")
    ap.add_argument("--teacher-task", default="fusion_translation", help="the teacher's task (default: fusion_translation)")
    ap.add_argument("--beam", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--gen-extra", default="", help="extra fairseq-generate flags for the teacher (one string)")
    tr = ap.add_argument_group("step 3: train deep_fusion_cmlm on the distilled data (--train)")
    tr.add_argument("--train", action="store_true")
    tr.add_argument("--plm", help="the PTM directory")
    tr.add_argument("--save-dir")
    tr.add_argument("--max-update", type=int)
    tr.add_argument("--minutes", type=float, help="wall-clock training time (fairseq --stop-time-hours)")
    tr.add_argument("--lr", type=float, default=5e-4)
    tr.add_argument("--max-tokens", type=int, default=4096)
    tr.add_argument("--train-extra", default="", help="extra fairseq-train flags (one string)")
    args = ap.parse_args(argv)
    if args.train and not (args.plm and args.save_dir and (args.max_update or args.minutes)):
        ap.error("--train needs --plm, --save-dir and a budget (--max-update and/or --minutes)")
    try:
        stats = distill(args.data, args.teacher, args.out, args.teacher_data, args.teacher_task, args.beam,
                        args.batch_size, cpu=args.cpu, gen_extra=args.gen_extra)
    except (FileNotFoundError, RuntimeError) as e:
        sys.exit(f"fusion_distill: error: {e}")
    print(f"distilled training set -> {args.out} {stats}")
    if args.train:
        budget = (["--stop-time-hours", args.minutes / 60] if args.minutes else []) + \
                 (["--max-update", args.max_update] if args.max_update else [])
        run_cli("fairseq-plm-train", args.out, "--task", "fusion_translation", "--arch", "deep_fusion_cmlm",
                "--plm", args.plm, "--criterion", "deep_fusion_loss", "--label-smoothing", "0.1",
                "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", args.lr, "--lr-scheduler",
                "inverse_sqrt", "--warmup-updates", "4000", "--warmup-init-lr", "1e-7", "--max-tokens",
                args.max_tokens, *budget, "--save-dir", args.save_dir, "--no-epoch-checkpoints",
                *(["--cpu"] if args.cpu else []), *shlex.split(args.train_extra))
        print(f"deep_fusion_cmlm trained on the distilled data -> {args.save_dir}")


if __name__ == "__main__":
    main()

"""Translation quickstart: MSP on a small multilingual GPT, English -> German, on real text,
next to a Transformer trained from scratch with the same budget and copying the source.

    python -m fairseq_plm.recipes.quickstart [--out quickstart_out] [--minutes 7]

1. builds an English-German corpus from this machine's gettext catalogs
   (/usr/share/locale/de/LC_MESSAGES/*.mo; deduplicated; fixed train/valid/test splits);
2. takes the small multilingual GPT shipped in examples/plms/tiny-mgpt (made by
   ``python -m fairseq_plm.recipes.pretrain_tiny_gpt``, which never saw the valid/test
   sentences in any language; see its README);
3. tokenizes with the PLM's own sentencepiece model and binarizes with ``fairseq-preprocess``
   (the PLM's ids for MSP; a fairseq dictionary over the same pieces for the Transformer);
4. trains, at the same time and for the same wall-clock budget on one CPU thread each,
   MSP prompts on the frozen PLM (``fairseq-train --user-dir fairseq_plm --arch msp``) and
   fairseq's own ``transformer`` from scratch (3+3 layers, d=256); both with 50 warm-up
   updates (7 minutes buy MSP on the 6-layer PLM about 130 updates on one thread);
5. translates the whole test split with ``fairseq-generate`` (beam 4);
6. prints one table (sacrebleu BLEU with its signature, trained parameters, updates reached)
   with the copy-the-source baseline, then a few sample translations.

The systems and their settings are those of ``fairseq_plm.recipes.msp_compare``, which runs
the full MSP comparison (Tables 1 and 5) the same way.
"""

import argparse
import os
import time

import fairseq_plm

from . import msp_compare as mc
from .common import write_results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(fairseq_plm.__file__)))
SHIPPED_PLM = os.path.join(REPO, "examples", "plms", "tiny-mgpt")
PROG = "quickstart"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "quickstart_out"),
                    help="working directory (reused: finished steps are skipped)")
    ap.add_argument("--plm", default=SHIPPED_PLM, help="causal PLM directory (HuggingFace GPT-2 format)")
    ap.add_argument("--minutes", type=float, default=7.0, help="training budget of each system")
    ap.add_argument("--prompt-length", type=int, default=32)
    ap.add_argument("--test-size", type=int, default=200)
    ap.add_argument("--output-shortlist", default="none", metavar="none|auto|FILE",
                    help="MSP scores only the target side's pieces in training and decoding "
                         "(fairseq_plm/plm/shortlist.py); auto: the pieces of the German training targets")
    a = ap.parse_args(argv)
    args = mc.check_args(ap, argparse.Namespace(
        plm=a.plm, raw=None, source_lang="en", target_lang="de", test_size=a.test_size, out=a.out,
        systems="msp,transformer,copy", minutes=a.minutes, jobs=2, threads=1, max_tokens=4096,
        warmup_updates=50, prompt_length=a.prompt_length, seed=1, output_shortlist=a.output_shortlist,
        beam=4, batch_size=32, speed=False, cpu=True))
    t0 = time.time()
    os.makedirs(args.out, exist_ok=True)
    mc.say(f"1/4 data: gettext En-De corpus, tokenized with {os.path.relpath(args.plm, os.getcwd())}'s "
           f"sentencepiece model", PROG)
    paths = mc.prepare_data(args, PROG)
    mc.say(f"2/4 train MSP prompts on the frozen PLM and a Transformer from scratch ({a.minutes:g} min each, "
           f"side by side, one CPU thread each)", PROG)
    mc.train_all(args, paths, PROG)
    mc.say("3/4 translate the test split (beam 4)", PROG)
    mc.generate_all(args, paths, PROG)
    mc.say("4/4 score with sacrebleu", PROG)
    rows = mc.results(args, paths)
    rows[0]["label"] = f"MSP on {os.path.basename(args.plm)} (frozen)"
    text = mc.table(rows, args)
    n_test = sum(1 for _ in open(os.path.join(args.raw, "test.de"), encoding="utf-8"))
    note = (f"En->De gettext test split, {n_test} sentences, none seen in pre-training; {a.minutes:g} min of "
            f"training per system on one CPU thread; BLEU: sacrebleu {rows[0]['signature']}")
    write_results(args.out, text, note, rows, args)
    for src, ref, hyps in mc.samples(args, ["msp", "transformer"]):
        print(f"  SRC          {src}\n  REF          {ref}")
        for label, hyp in hyps.items():
            print(f"  {label:<12.12} {hyp}")
        print()
    mc.say(f"done in {(time.time() - t0) / 60:.1f} min; outputs in {os.path.relpath(args.out, os.getcwd())}/", PROG)


if __name__ == "__main__":
    main()

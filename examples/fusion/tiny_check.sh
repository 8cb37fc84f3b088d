#!/usr/bin/env bash
# Runs every command of examples/fusion/README.md on tiny data, sizes shrunk, on the CPU:
#   PTM       a random 4-layer d=32 mBERT-layout model over a WordPiece vocab of the corpus
#             (tests/tiny.py), instead of mBERT
#   corpus    120/13/13 gettext En-De pairs (tests/tiny.py make_corpus), instead of WMT
#   vocab     target sentencepiece 200 pieces (instead of 30K), joint baseline vocab 300
#   models    decoder / baseline width 32, FFN 64, 4 heads (layer counts as in the README)
#   training  --max-update 2 (instead of convergence), --batch-size 8 --update-freq 1, --cpu,
#             no --distributed-world-size 8; fairseq-preprocess --workers 1; joint vocab 300
#   Table 7   M = 1, 2, 4 (the tiny PTM has 4 layers: M = 6 does not divide them)
#   Table 6   "monolingual BERT" is another --plm directory: not run separately
# Everything else (flags, archs, criterion, decoding options) is the README's.
#
#     bash examples/fusion/tiny_check.sh [WORKDIR]        # ~5 min on 1 CPU core
set -euo pipefail
ROOT=$(mkdir -p "${1:-/tmp/fusion_tiny}" && cd "${1:-/tmp/fusion_tiny}" && pwd)
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PY:-$REPO/.venv/bin/python}
export PATH=$(dirname "$PY"):$PATH OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} PYTHONWARNINGS=ignore
cd "$ROOT"
say() { echo "[tiny_check $(date +%H:%M:%S)] $*"; }

mkdir -p ck
say "tiny stand-ins: corpus in raw/, PTM in ptm/"
"$PY" - "$REPO" <<'PYEOF'
import os, sys
sys.path.insert(0, sys.argv[1])
from tests.tiny import make_corpus, make_tiny_mbert, make_wordpiece_vocab
if not os.path.exists("raw/test.de"):
    make_corpus("raw")
if not os.path.exists("ptm/config.json"):
    make_tiny_mbert("ptm", make_wordpiece_vocab(["raw/train.en", "raw/train.de"], "vocab.txt"))
PYEOF
PTM=ptm
NWORDS=200          # README: 30000
TINY_DEC="--decoder-embed-dim 32 --decoder-ffn-embed-dim 64 --decoder-attention-heads 4"
TINY_RUN="--max-update 2 --batch-size 8 --cpu --num-workers 0 --no-epoch-checkpoints --log-format simple"

if [ -z "${ONLY_BASELINES:-}" ]; then  # ONLY_BASELINES=1: the baselines' section only
# ---------------------------------------------------------------- data (README "Data")
say "data: PTM tokenizer for the source, sentencepiece for the target, one fairseq-preprocess"
fairseq-plm-encode --tokenizer $PTM --inputs raw/{train,valid,test}.en --outputs tok/{train,valid,test}.en
python -c "import sentencepiece as spm; spm.SentencePieceTrainer.train(input='raw/train.de', model_prefix='nmt.de', vocab_size=$NWORDS, model_type='unigram', character_coverage=1.0)" 2>/dev/null
fairseq-plm-encode --tokenizer nmt.de.model --inputs raw/{train,valid,test}.de --outputs tok/{train,valid,test}.de
rm -rf data-bin
fairseq-plm-preprocess --task fusion_translation -s en -t de \
  --trainpref tok/train --validpref tok/valid --testpref tok/test \
  --srcdict $PTM --nwordstgt 30000 --destdir data-bin --workers 1 > /dev/null

# ---------------------------------------------------------------- AT (README "Train")
PAPER="--label-smoothing 0.1 --dropout 0.1 --optimizer adam --adam-betas (0.9,0.98) --lr 1e-4 \
  --update-freq 1 --max-source-positions 80 --max-target-positions 80 --skip-invalid-size-inputs-valid-test"
train() {  # train SAVE_DIR FLAGS...
  local save=$1; shift
  say "train $save: $*"
  fairseq-plm-train data-bin --task fusion_translation --plm $PTM --criterion deep_fusion_loss \
    $PAPER $TINY_RUN --save-dir ck/$save "$@" > ck-$save.log 2>&1 || { tail -30 ck-$save.log; exit 1; }
  grep -q "done training" ck-$save.log
}
train fusion --arch deep_fusion --fusion-layers 2 $TINY_DEC
say "generate fusion (beam 4)"
fairseq-plm-generate data-bin --task fusion_translation --path ck/fusion/checkpoint_best.pt \
  --gen-subset test --beam 4 --batch-size 128 --remove-bpe sentencepiece --cpu > gen-fusion.out
fairseq-plm-score --generate-output gen-fusion.out --ref raw/test.de

# ---------------------------------------------------------------- NAT (README "Non-autoregressive")
train fusion_cmlm --arch deep_fusion_cmlm --fusion-layers 2 $TINY_DEC
say "generate fusion_cmlm (10 iterations, length beam 5)"
fairseq-plm-generate data-bin --task fusion_translation --path ck/fusion_cmlm/checkpoint_best.pt \
  --gen-subset test --iter-decode-max-iter 9 --iter-decode-with-beam 5 --iter-decode-eos-penalty 0 \
  --batch-size 128 --remove-bpe sentencepiece --cpu > gen-fusion_cmlm.out
fairseq-plm-score --generate-output gen-fusion_cmlm.out --ref raw/test.de

# ---------------------------------------------------------------- ablations (README Tables 6, 7, 2)
train no_twp --arch deep_fusion $TINY_DEC --no-twp
train no_tsp --arch deep_fusion $TINY_DEC --no-tsp
train no_twp_tsp --arch deep_fusion $TINY_DEC --no-twp --no-tsp
train no_mlm --arch deep_fusion $TINY_DEC --no-mlm
train no_pretraining --arch deep_fusion $TINY_DEC --plm-random-init
train ptm_all_tasks --arch deep_fusion $TINY_DEC --ptm-update all_tasks
train ptm_frozen --arch deep_fusion $TINY_DEC --ptm-update frozen
train translation_only --arch deep_fusion $TINY_DEC --no-twp --no-tsp --no-mlm
for M in 1 4; do  # (2 is the default above; the tiny PTM has 4 layers, so 6 is run as 4)
  train m$M --arch deep_fusion $TINY_DEC --fusion-layers $M
done
# Table 2 lines 2-3: the decoder attends the PTM's top layer, so its width is the PTM's (32 here)
train mbert_init_encoder --arch deep_fusion_mbert_init_encoder --decoder-layers 6 $TINY_DEC
train frozen_mbert_encoder --arch deep_fusion_frozen_mbert_encoder --decoder-layers 6 $TINY_DEC

fi

# ---------------------------------------------------------------- baselines (README "Baselines")
say "baseline data: joint sentencepiece, joined dictionary"
python -c "import sentencepiece as spm; spm.SentencePieceTrainer.train(input='raw/train.en,raw/train.de', model_prefix='joint', vocab_size=300, model_type='unigram', character_coverage=1.0)" 2>/dev/null
for l in en de; do
  fairseq-plm-encode --tokenizer joint.model --inputs raw/{train,valid,test}.$l --outputs tok-joint/{train,valid,test}.$l
done
rm -rf data-bin-joint
fairseq-preprocess -s en -t de --trainpref tok-joint/train --validpref tok-joint/valid --testpref tok-joint/test \
  --joined-dictionary --destdir data-bin-joint --workers 1 > /dev/null
TINY_BASE="--encoder-embed-dim 32 --decoder-embed-dim 32 --encoder-ffn-embed-dim 64 --decoder-ffn-embed-dim 64 \
  --encoder-attention-heads 4 --decoder-attention-heads 4"
BASE="--share-all-embeddings --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --dropout 0.1 \
  --optimizer adam --adam-betas (0.9,0.98) --lr 5e-4 --lr-scheduler inverse_sqrt --warmup-updates 4000"
baseline() {  # baseline NAME FLAGS...
  local name=$1; shift
  say "train baseline $name: $*"
  fairseq-plm-train data-bin-joint --task translation $BASE $TINY_RUN --save-dir ck/$name "$@" \
    > ck-$name.log 2>&1 || { tail -30 ck-$name.log; exit 1; }
  fairseq-plm-generate data-bin-joint --path ck/$name/checkpoint_best.pt --gen-subset test --beam 4 \
    --required-batch-size-multiple 1 \
    --batch-size 128 --remove-bpe sentencepiece --cpu > gen-$name.out
  fairseq-plm-score --generate-output gen-$name.out --ref raw/test.de
}
baseline transformer_base --arch transformer_wmt_en_de $TINY_BASE
baseline transformer_big --arch transformer_vaswani_wmt_en_de_big $TINY_BASE
baseline transformer12 --arch transformer --encoder-layers 12 --decoder-layers 6 $TINY_BASE
baseline transformer20 --arch transformer --encoder-layers 20 --decoder-layers 6 $TINY_BASE \
  --encoder-normalize-before --decoder-normalize-before
say "all README commands ran"

"""MPT: Multilingual Prompt Translator (Qiu et al.) for few-shot cross-lingual NLI on XLM-R,
and its baselines. Used with the ``mpt_nli`` task and the ``mpt_loss`` criterion.

  input (Eq. 1, 5, 9)   X = X_P . X_H ? [p] <mask> .   (prompt position set by the task)
  soft prompt (§III-A)  p^S = MLP(LSTM(E)), E in R^{m x d}   (P-tuning reparameterisation)
  translator (Eq. 4)    p^T = W_down ReLU(W_up p^S + b_up) + b_down   ("Linear-2", d -> 2d -> d)
  MLM (Eq. 2, 6)        P^MLM = softmax(W_lh h_<mask>) over the whole vocabulary
  verbalizer (Eq. 2)    P^CLS = W_Z P^MLM: P^CLS(y) = sum of P^MLM over y's label words (the
                        task's ``--verbalizer-scoring mlm``, default; ``renormalized`` divides
                        by the sum over all labels, PET's practice; see ``Verbalizer``)

Every input row carries a flag ``target_lang``: rows in the source language (English
training data, the source side of a parallel pair, the English test set) are read with
p^S, the others (the target side of a parallel pair, other languages' test sets) with
p^T = Transl(p^S) (§III-C). The translator therefore only ever feeds target rows.

Registered models:
  ``mpt``     soft prompt + translator (``--translator``, default linear-2; the Fig. 4 ablation
              offers linear-1, lstm-1/2, transformer-1/2, and ``none``: p^T = p^S, Table II
              "w/o prompt translator").
  ``mpt_sp``  architecture of ``mpt`` with ``--translator none``: Soft Prompting (Zhao & Schütze
              2021), used with ``--alpha 1`` and no parallel data.
  ``mpt_ft``  fine-tuning baseline (FT): XLM-R with a classification head on <s> over the
              sentence pair (task ``--input-format pair``).
  ``mpt_pct`` PCT baseline (Qi et al., ACL 2022, "prompt-learning from cross-lingual
              templates"): XLM-R answering a discrete cloze question whose template words are
              in the example's language (task ``--input-format pct``), trained with criterion
              ``pct_loss`` on each question and its copy under a template of a randomly sampled
              other language, plus a symmetric KL consistency term (see ``PCTModel``).

Tuned or frozen PLM: the paper trains all models with AdamW at lr 4e-5 for 50 epochs, a
fine-tuning learning rate (its FT baseline and the SP/PCT baselines it follows all update
XLM-R), so we read MPT as tuning the PLM together with prompt and translator: the default.
``--freeze-plm`` trains prompt and translator only; its checkpoints then hold only those
(plus the PLM's fingerprint), while tuned checkpoints hold the whole PLM.
"""

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.dataclass import ChoiceEnum
from fairseq.models import BaseFairseqModel, register_model, register_model_architecture

from ..plm.errors import FairseqPLMError
from ..plm.fairseq_checks import check_dictionary
from ..plm.frozen import FrozenPLMMixin, PLMArgs, build_frozen_plm, build_plm
from ..plm.prompts import PTuningPrompt

TRANSLATORS = ["linear-2", "linear-1", "lstm-1", "lstm-2", "transformer-1", "transformer-2", "none"]


@dataclass
class MPTConfig(PLMArgs):
    translator: ChoiceEnum(TRANSLATORS) = field(
        default="linear-2", metadata={"help": "prompt translator p^T = Transl(p^S): linear-2 is Eq. 4 "
                                              "(d->2d->d, ReLU); the others are the Fig. 4 ablation; none: p^T = p^S"})
    freeze_plm: bool = field(
        default=False, metadata={"help": "train prompt and translator only (default: tune XLM-R too, as we read "
                                         "the paper's lr 4e-5 setup)"})


@dataclass
class MPTFineTuneConfig(PLMArgs):
    pooler_dropout: float = field(default=0.1, metadata={"help": "dropout of the classification head"})


def verbalizer_scoring(task):
    """The task's ``--verbalizer-scoring`` (checkpoints from before the option: the default)."""
    return str(getattr(task.cfg, "verbalizer_scoring", "mlm"))


def mask_logits(plm, hidden, src_tokens, mask_idx):
    """MLM logits over the vocabulary at each row's single <mask> (Eq. 2 / Eq. 6): [B, V]."""
    at_mask = src_tokens.eq(mask_idx)
    if not bool((at_mask.sum(dim=1) == 1).all()):
        raise FairseqPLMError("every MPT/PCT input needs exactly one <mask> token")
    return plm.logits(hidden[at_mask])


def load_task_plm(cfg, task, freeze):
    """The PLM (frozen or trainable) whose vocabulary is the task's."""
    plm = build_frozen_plm(cfg) if freeze else build_plm(cfg)
    if plm.cfg.family not in ("roberta", "bert"):
        raise FairseqPLMError(f"--plm {cfg.plm} is a {plm.cfg.family} model; MPT needs a masked LM (XLM-R, mBERT)")
    check_dictionary(task.dictionary, plm, cfg.plm, what=f"the tokenizer of {task.cfg.plm}")
    if task.cfg.max_length > plm.cfg.usable_positions:
        raise FairseqPLMError(f"--max-length {task.cfg.max_length} exceeds the {plm.cfg.usable_positions} "
                              f"tokens the PLM {cfg.plm} can position")
    return plm


class Verbalizer(nn.Module):
    """MPT Eq. 2: the label distribution P^CLS from the full-vocabulary <mask> distribution
    P^MLM = softmax(logits).

    ``mlm`` (default, the paper's P^CLS = W_Z P^MLM): P^CLS(y) = sum_{z in Z_y} P^MLM(z), where
    W_Z (n x l) picks the label words out of the vocabulary; these do not sum to one over the
    labels (the rest of the vocabulary keeps its mass), so Eq. 3's CE -log P^CLS(y) also pushes
    probability away from every non-label word: with one word per label it is the
    full-vocabulary MLM cross-entropy of the label word (as PCT trains too).
    ``renormalized``: P^CLS(y) divided by its sum over the labels (PET's practice; with one word
    per label, the softmax of the label words' logits). Both give the same argmax (prediction).
    """

    SCORINGS = ("mlm", "renormalized")

    def __init__(self, label_word_ids, scoring="mlm"):
        super().__init__()
        scoring = str(scoring)
        if scoring not in self.SCORINGS:
            raise FairseqPLMError(f"--verbalizer-scoring {scoring!r}: expected one of {', '.join(self.SCORINGS)}")
        self.scoring = scoring
        # W_Z of Eq. 2: label word j (id word_ids[j]) belongs to the labels where word_mask is 0
        self.register_buffer("word_ids", torch.tensor([w for ws in label_word_ids for w in ws]), persistent=False)
        owner = torch.tensor([y for y, ws in enumerate(label_word_ids) for _ in ws])
        word_mask = torch.full((len(label_word_ids), len(owner)), float("-inf"))
        word_mask[owner, torch.arange(len(owner))] = 0.0
        self.register_buffer("word_mask", word_mask, persistent=False)

    def forward(self, logits):
        """log P^CLS over the labels, [B, C], from <mask> logits [B, V]."""
        logits = logits.float()
        words = logits.index_select(-1, self.word_ids)  # [B, n]
        per_label = torch.logsumexp(words[:, None, :] + self.word_mask, dim=-1)  # log sum_z exp(logit_z)
        if self.scoring == "renormalized":
            return F.log_softmax(per_label, dim=-1)
        return per_label - torch.logsumexp(logits, dim=-1, keepdim=True)  # log W_Z softmax(logits)


class Translator(nn.Module):
    """Transl(p^S) -> p^T for the prompt's m vectors [B', m, d] (Eq. 4 and the Fig. 4 ablation)."""

    def __init__(self, kind, hidden, num_heads=8, dropout=0.1):
        super().__init__()
        self.kind = kind = str(kind)  # a fairseq ChoiceEnum value when it comes from the config
        family, _, layers = kind.partition("-")
        if kind == "linear-2":  # Eq. 4
            self.net = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, hidden))
        elif kind == "linear-1":
            self.net = nn.Linear(hidden, hidden)
        elif family == "lstm":
            self.net = nn.LSTM(hidden, hidden, num_layers=int(layers), batch_first=True)
        elif family == "transformer":
            layer = nn.TransformerEncoderLayer(hidden, num_heads, 2 * hidden, dropout=dropout, batch_first=True)
            self.net = nn.TransformerEncoder(layer, int(layers), enable_nested_tensor=False)
        elif kind == "none":
            self.net = None
        else:
            raise FairseqPLMError(f"--translator {kind!r}: expected one of {', '.join(TRANSLATORS)}")

    def forward(self, p):
        if self.net is None:
            return p
        out = self.net(p)
        return out[0] if isinstance(out, tuple) else out  # LSTM returns (output, state)


@register_model("mpt", dataclass=MPTConfig)
class MPTModel(FrozenPLMMixin, BaseFairseqModel):
    """XLM-R reading cloze inputs with a soft prompt p^S or its translation p^T."""

    def __init__(self, plm, prompt_length, translator, label_word_ids, mask_idx, pad_idx, frozen=False,
                 scoring="mlm"):
        super().__init__()
        self.plm, self.frozen = plm, frozen
        d = plm.cfg.hidden_size
        self.prompt = PTuningPrompt(prompt_length, d)
        self.translator = Translator(translator, d, plm.cfg.num_heads, plm.cfg.dropout)
        self.mask_idx, self.pad_idx = mask_idx, pad_idx
        self.verbalizer = Verbalizer(label_word_ids, scoring)

    @classmethod
    def build_model(cls, cfg, task):
        if task.cfg.input_format != "cloze":
            raise FairseqPLMError(f"--arch {cfg._name} reads cloze inputs: use --input-format cloze")
        plm = load_task_plm(cfg, task, cfg.freeze_plm)
        return cls(plm, task.cfg.prompt_length, cfg.translator, task.label_word_ids, task.dictionary.mask_index,
                   task.dictionary.pad(), frozen=cfg.freeze_plm, scoring=verbalizer_scoring(task))

    def prompts(self):
        """(p^S, p^T), each [1, m, d]."""
        p_s = self.prompt()
        return p_s, self.translator(p_s)

    def forward(self, src_tokens, src_lengths=None, prompt_start=None, target_lang=None, **unused):
        """MLM logits over the vocabulary at each row's <mask> (Eq. 2 / Eq. 6): [B, V]."""
        b = src_tokens.size(0)
        p_s, p_t = self.prompts()
        m, d = p_s.shape[1:]
        if target_lang is None or not bool(target_lang.any()):
            p = p_s.expand(b, m, d)
        else:  # the translator's output reaches target-language rows only
            p = torch.where(target_lang[:, None, None], p_t, p_s).expand(b, m, d)
        x = self.plm.embed(src_tokens)
        slots = (prompt_start[:, None] + torch.arange(m, device=src_tokens.device))[:, :, None].expand(b, m, d)
        x = x.scatter(1, slots, p.to(x.dtype))
        pad = src_tokens.eq(self.pad_idx)
        hidden = self.plm(inputs_embeds=x, padding_mask=pad if pad.any() else None).hidden
        return mask_logits(self.plm, hidden, src_tokens, self.mask_idx)

    def label_log_probs(self, logits):
        """Eq. 2-3: log P^CLS over the labels, [B, C] (see ``Verbalizer``)."""
        return self.verbalizer(logits)

    supports_alignment = True

    # checkpoints: prompt-only when the PLM is frozen (FrozenPLMMixin), complete when it is tuned
    def state_dict(self, *args, **kwargs):
        if self.frozen:
            return super().state_dict(*args, **kwargs)
        return super(FrozenPLMMixin, self).state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        if self.frozen:
            return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)
        if any(k.endswith("plm_fingerprint") for k in state_dict):
            raise FairseqPLMError("this checkpoint was trained with --freeze-plm and holds no PLM weights; "
                                  "load it with --model-overrides \"{'freeze_plm': True}\"")
        return super(FrozenPLMMixin, self).load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)


@register_model_architecture("mpt", "mpt_sp")
def mpt_sp(args):
    """Soft Prompting baseline: the same prompt for every language (no translator)."""
    args.translator = getattr(args, "translator", "none")


@register_model("mpt_ft", dataclass=MPTFineTuneConfig)
class MPTFineTune(BaseFairseqModel):
    """FT baseline: XLM-R + RoBERTa's classification head (dense, tanh, dropout, projection)
    on the <s> state of "<s> X_P </s></s> X_H </s>"."""

    supports_alignment = False

    def __init__(self, plm, num_labels, pooler_dropout=0.1):
        super().__init__()
        self.plm = plm
        d = plm.cfg.hidden_size
        self.head = nn.Sequential(nn.Dropout(pooler_dropout), nn.Linear(d, d), nn.Tanh(),
                                  nn.Dropout(pooler_dropout), nn.Linear(d, num_labels))

    @classmethod
    def build_model(cls, cfg, task):
        if task.cfg.input_format != "pair":
            raise FairseqPLMError("--arch mpt_ft reads sentence pairs: use --input-format pair")
        return cls(load_task_plm(cfg, task, freeze=False), task.num_labels, cfg.pooler_dropout)

    def forward(self, src_tokens, src_lengths=None, **unused):
        """Class logits [B, C]."""
        pad = src_tokens.eq(self.plm.cfg.pad_token_id)
        hidden = self.plm(src_tokens, padding_mask=pad if pad.any() else None).hidden
        return self.head(hidden[:, 0])

    def label_log_probs(self, logits):
        return F.log_softmax(logits.float(), dim=-1)


@register_model("mpt_pct", dataclass=PLMArgs)
class PCTModel(BaseFairseqModel):
    """PCT baseline of MPT Table I: prompt-learning from cross-lingual templates (Qi et al.,
    ACL 2022, "Enhancing Cross-lingual Natural Language Inference by Prompt-learning from
    Cross-lingual Templates"; MPT cites it as [8]: "cross-lingual hard prompt ... consistency
    in answer probability across languages via the KLD loss").

    The model is XLM-R's own masked LM, fully fine-tuned, with no added parameters. An NLI pair
    becomes a discrete cloze question in XLM-R's sentence-pair layout whose template words are
    in a language l (``ClozeTemplate.pct``, task ``--input-format pct``)::

        <s> X_P </s></s> Question_l: X_H ?_l Answer_l: <mask> </s>

    and the answer is read from the label words at <mask> (``Verbalizer``; PCT's label words
    are the same in every language). Training (criterion ``pct_loss``) pairs every English
    question with an augmented question: the same pair under the template of a language
    sampled from the target languages; the loss is the CE of both questions plus the symmetric
    KL between their full-vocabulary <mask> distributions. At test time every language uses
    its own template.
    """

    supports_alignment = False

    def __init__(self, plm, label_word_ids, mask_idx, pad_idx, scoring="mlm"):
        super().__init__()
        self.plm, self.mask_idx, self.pad_idx = plm, mask_idx, pad_idx
        self.verbalizer = Verbalizer(label_word_ids, scoring)

    @classmethod
    def build_model(cls, cfg, task):
        if task.cfg.input_format != "pct":
            raise FairseqPLMError("--arch mpt_pct reads cross-lingual template questions: use --input-format pct")
        return cls(load_task_plm(cfg, task, freeze=False), task.label_word_ids, task.dictionary.mask_index,
                   task.dictionary.pad(), verbalizer_scoring(task))

    def forward(self, src_tokens, src_lengths=None, **unused):
        """MLM logits over the vocabulary at each row's <mask>: [B, V]."""
        pad = src_tokens.eq(self.pad_idx)
        hidden = self.plm(src_tokens, padding_mask=pad if pad.any() else None).hidden
        return mask_logits(self.plm, hidden, src_tokens, self.mask_idx)

    def label_log_probs(self, logits):
        return self.verbalizer(logits)

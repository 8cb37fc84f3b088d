"""``deep_fusion_loss``: partitioned multi-task learning, L = L_T + L_TWP + L_TSP + L_MLM (Eq. 18).

* L_T, translation: label-smoothed cross-entropy (paper: 0.1). For the AT model it is summed
  over target tokens (``sample_size`` = target tokens, as fairseq's
  ``label_smoothed_cross_entropy``); for the Mask-Predict model it is the mean over masked
  tokens plus the length loss (``sample_size`` = 1, as fairseq's ``nat_loss``).
* L_TWP (Eq. 15): -log P(y_j | r^A_N), averaged over the words of the target bags (y_bow: a
  set by default, ``--twp-bag``);
* L_TSP (Eq. 17): the contrastive cross-entropy of each source against its candidates,
  averaged over sentences;
* L_MLM (Eq. 8): masked-token NLL averaged over the masked source tokens.

Each auxiliary term is a mean, added as ``sample_size x mean`` so that after fairseq divides by
``sample_size`` the objective is exactly the unweighted sum of Eq. (18) with L_T per token.
Which terms exist, and which parameters each trains, is the model's business (``--no-twp``,
``--ptm-update`` ...). Every term is logged: ``translation-loss``, ``twp-loss``, ``tsp-loss``,
``mlm-loss``, next to ``loss`` (the total) and ``nll_loss``/``ppl`` (translation).
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics
from omegaconf import II

from .plm_nat_loss import token_loss


@dataclass
class DeepFusionLossConfig(FairseqDataclass):
    label_smoothing: float = field(default=0.1, metadata={"help": "label smoothing of L_T (paper: 0.1)"})
    sentence_avg: bool = II("optimization.sentence_avg")


def auxiliary_losses(aux):
    """name -> mean loss of each intermediate task the model ran (Eq. 15, 17, 8)."""
    losses = {}
    if "twp" in aux:
        t = aux["twp"]
        losses["twp"] = -t["lprobs"][t["mask"]].mean() if t["mask"].any() else t["lprobs"].sum() * 0.0
    if "tsp" in aux:
        logits = aux["tsp"]["logits"]
        losses["tsp"] = F.cross_entropy(logits, torch.arange(logits.size(0), device=logits.device))
    if "mlm" in aux:
        losses["mlm"] = token_loss(aux["mlm"]["lprobs"], aux["mlm"]["targets"], None, 0.0)[0]
    return losses


@register_criterion("deep_fusion_loss", dataclass=DeepFusionLossConfig)
class DeepFusionLoss(FairseqCriterion):
    def __init__(self, task, label_smoothing=0.1, sentence_avg=False):
        super().__init__(task)
        self.eps, self.sentence_avg = label_smoothing, sentence_avg

    def forward(self, model, sample, reduce=True):
        net = sample["net_input"]
        out = model(**net, tgt_tokens=sample["target"], ptm_target=sample.get("ptm_target"))
        target = sample["target"]
        # the collater's count (an int): no device synchronisation per step
        ntokens = sample.get("ntokens") or int(target.ne(self.padding_idx).sum())
        if isinstance(out, dict):  # non-autoregressive: named terms, means (fairseq nat_loss style)
            aux = out.pop("auxiliary", {})
            translation, nll = 0.0, None
            for name, t in out.items():
                loss, term_nll = token_loss(t["lprobs"], t["targets"], t["mask"],
                                            0.0 if t.get("no_smoothing") else self.eps)
                translation = translation + t.get("factor", 1.0) * loss
                nll = term_nll if nll is None else nll
            sample_size, nll_sum = 1, nll * ntokens
        else:
            aux = out[1].pop("auxiliary", {})
            lprobs = model.get_normalized_probs(out, log_probs=True)
            translation, nll_sum = label_smoothed_nll_loss(
                lprobs.view(-1, lprobs.size(-1)), target.view(-1, 1), self.eps, ignore_index=self.padding_idx)
            sample_size = target.size(0) if self.sentence_avg else ntokens
        total = translation
        # logged values stay tensors (as in fairseq's own criterions): no .item() per term, so the
        # step does not wait for the device four or five times; fairseq reduces them once per log
        log = {"translation-loss": translation.detach()}
        for name, loss in auxiliary_losses(aux).items():
            total = total + sample_size * loss
            log[f"{name}-loss"] = sample_size * loss.detach()
        logging_output = {
            "loss": total.detach(), "nll_loss": nll_sum.detach(), "ntokens": ntokens,
            "nsentences": target.size(0), "sample_size": sample_size, **log,
        }
        return total, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs):
        def total(key):
            return sum(log.get(key, 0) for log in logging_outputs)

        sample_size, ntokens = total("sample_size") or 1, total("ntokens") or 1
        keys = {k for log in logging_outputs for k in log if k == "loss" or k.endswith("-loss")}
        for key in sorted(keys):
            metrics.log_scalar(key, total(key) / sample_size / math.log(2), sample_size, round=3)
        metrics.log_scalar("nll_loss", total("nll_loss") / ntokens / math.log(2), ntokens, round=3)
        metrics.log_derived("ppl", lambda m: 2 ** m["nll_loss"].avg if m["nll_loss"].avg < 64 else float("inf"))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True

"""``plm_nat_loss``: the loss of this package's non-autoregressive models (SGA, CTC-NAT).

The model returns named loss terms (fairseq ``nat_loss`` style); each is reduced here and
logged as ``<name>-loss``, and the total is their weighted sum (SGA Eq. 7: L_1 + L_2).

  * CTC terms (``"ctc": True``): negative log-likelihood of the target under all
    alignments, summed over sentences and divided by the number of target tokens;
  * token terms: (label-smoothed) cross-entropy over the positions in ``mask``, averaged.

As in ``nat_loss``, every term is a per-token mean and ``sample_size`` is 1.
"""

import math
from dataclasses import dataclass, field

import torch
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics

from ..nat.ctc import ctc_loss


@dataclass
class PLMNATLossConfig(FairseqDataclass):
    label_smoothing: float = field(
        default=0.0, metadata={"help": "label smoothing of the token (Mask-Predict) terms; CTC terms are not smoothed"})


def token_loss(lprobs, targets, mask, label_smoothing):
    """Mean (label-smoothed) NLL over the selected positions: (loss, nll)."""
    if mask is not None:
        lprobs, targets = lprobs[mask], targets[mask]
    if targets.numel() == 0:
        zero = lprobs.sum() * 0.0
        return zero, zero
    nll = -lprobs.gather(-1, targets[..., None]).squeeze(-1).float()
    loss = nll
    if label_smoothing > 0:
        finite = lprobs.masked_fill(torch.isinf(lprobs), 0.0).float()
        smooth = -finite.sum(-1) / torch.isfinite(lprobs).sum(-1).clamp(min=1)
        loss = (1 - label_smoothing) * nll + label_smoothing * smooth
    return loss.mean(), nll.mean()


@register_criterion("plm_nat_loss", dataclass=PLMNATLossConfig)
class PLMNATLoss(FairseqCriterion):
    def __init__(self, task, label_smoothing=0.0):
        super().__init__(task)
        self.label_smoothing = label_smoothing

    def forward(self, model, sample, reduce=True):
        net = sample["net_input"]
        terms = model(net["src_tokens"], net["src_lengths"], net.get("prev_output_tokens"),
                      tgt_tokens=sample["target"])
        total, log = 0.0, {}
        ntokens = sample["target"].ne(self.padding_idx).sum()
        for name, t in terms.items():
            if t.get("ctc"):
                n = t["target_mask"].sum().clamp(min=1)
                loss = ctc_loss(t["lprobs"], t["input_mask"], t["targets"], t["target_mask"],
                                blank=t.get("blank", model.blank)) / n  # a term over a shortlist names its blank
                nll = loss
            else:
                ls = 0.0 if t.get("no_smoothing") else self.label_smoothing
                loss, nll = token_loss(t["lprobs"], t["targets"], t["mask"], ls)
            total = total + t.get("factor", 1.0) * loss
            log[f"{name}-loss"] = loss.detach().item()
        logging_output = {
            "loss": total.detach().item(), "nll_loss": total.detach().item(), "ntokens": int(ntokens),
            "nsentences": sample["target"].size(0), "sample_size": 1, **log,
        }
        return total, 1, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs):
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs) or 1
        keys = {k for log in logging_outputs for k in log if k == "loss" or k.endswith("-loss")}
        for key in sorted(keys):
            value = sum(log.get(key, 0.0) for log in logging_outputs)
            metrics.log_scalar(key, value / sample_size / math.log(2), sample_size, round=3)
        metrics.log_derived("ppl", lambda m: 2 ** m["loss"].avg if m["loss"].avg < 64 else float("inf"))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True

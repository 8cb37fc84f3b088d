"""``mpt_loss``: MPT's training objective (Qiu et al., Eq. 3, 7, 8).

    L_total = alpha * L_CE + (1 - alpha) * L_KLD                              Eq. 8
    L_CE    = -log P^CLS(y | X)  on the verbalizer distribution               Eq. 3
    L_KLD   = KL(P_S || P_T) + KL(P_T || P_S)  between the full-vocabulary     Eq. 7
              <mask> distributions of a parallel source (with p^S) and its
              translation (with p^T)

Both terms are means over the batch. A batch without parallel rows (validation, the SP and FT
baselines, "w/o external data" runs without a corpus) has L_total = L_CE. ``ce_loss``,
``kld_loss`` (nats) and ``accuracy`` (%) are logged next to ``loss``; ``--best-checkpoint-metric
accuracy --maximize-best-checkpoint-metric`` selects on the development accuracy.
"""

from dataclasses import dataclass, field

import torch.nn.functional as F
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass
from fairseq.logging import metrics

from ..plm.errors import FairseqPLMError


@dataclass
class MPTLossConfig(FairseqDataclass):
    alpha: float = field(default=0.5, metadata={"help": "weight of L_CE in Eq. 8 (§IV-B: 0.5; 1 = 'w/o consistency "
                                                        "loss', Table II)"})


def symmetric_kl(logits_s, logits_t):
    """Eq. 7 per row: KL(P_S || P_T) + KL(P_T || P_S) = sum_v (P_S - P_T)(log P_S - log P_T)."""
    ls, lt = F.log_softmax(logits_s.float(), dim=-1), F.log_softmax(logits_t.float(), dim=-1)
    return ((ls.exp() - lt.exp()) * (ls - lt)).sum(dim=-1)


@register_criterion("mpt_loss", dataclass=MPTLossConfig)
class MPTLoss(FairseqCriterion):
    def __init__(self, task, alpha=0.5):
        super().__init__(task)
        if not 0.0 <= alpha <= 1.0:
            raise FairseqPLMError(f"--alpha {alpha}: expected a weight in [0, 1]")
        self.alpha = alpha

    def forward(self, model, sample, reduce=True):
        out = model(**sample["net_input"])
        n = sample.get("n_task", out.size(0))
        lprobs = model.label_log_probs(out[:n])
        ce = F.nll_loss(lprobs, sample["target"])  # Eq. 3, batch mean
        log = {"ce_loss": ce.detach().item(), "ncorrect": int((lprobs.argmax(-1) == sample["target"]).sum()),
               "nsentences": n, "ntokens": sample["ntokens"], "sample_size": 1}
        loss = ce
        if out.size(0) > n:  # parallel rows: n sources with p^S, then their n translations with p^T
            if not getattr(model, "supports_alignment", False):
                raise FairseqPLMError(f"{type(model).__name__} has no <mask> prediction to align; train it "
                                      f"without --parallel-data")
            kld = symmetric_kl(out[n:2 * n], out[2 * n:3 * n]).mean()
            loss = self.alpha * ce + (1 - self.alpha) * kld  # Eq. 8
            log.update(kld_loss=kld.detach().item(), n_kld=1)
        log["loss"] = loss.detach().item()
        return loss, 1, log

    @staticmethod
    def reduce_metrics(logging_outputs):
        total = lambda k: sum(log.get(k, 0) for log in logging_outputs)  # noqa: E731
        sample_size = total("sample_size") or 1
        metrics.log_scalar("loss", total("loss") / sample_size, sample_size, round=4)
        metrics.log_scalar("ce_loss", total("ce_loss") / sample_size, sample_size, round=4)
        if total("n_kld"):
            metrics.log_scalar("kld_loss", total("kld_loss") / total("n_kld"), total("n_kld"), round=4)
        n = total("nsentences")
        if n:
            metrics.log_scalar("accuracy", 100.0 * total("ncorrect") / n, n, round=2)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True

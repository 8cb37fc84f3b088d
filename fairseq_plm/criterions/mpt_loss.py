"""``mpt_loss``: MPT's training objective (Qiu et al., Eq. 3, 7, 8), and ``pct_loss``: the
objective of its PCT baseline (Qi et al. 2022).

    L_total = alpha * L_CE + (1 - alpha) * L_KLD                              Eq. 8
    L_CE    = -log P^CLS(y | X)  on the verbalizer distribution               Eq. 3
    L_KLD   = KL(P_S || P_T) + KL(P_T || P_S)  between the full-vocabulary     Eq. 7
              <mask> distributions of a parallel source (with p^S) and its
              translation (with p^T)

Both terms are means over the batch. A batch without parallel rows (validation, the SP and FT
baselines, "w/o external data" runs without a corpus) has L_total = L_CE. ``ce_loss``,
``kld_loss`` (nats) and ``accuracy`` (%) are logged next to ``loss``; ``--best-checkpoint-metric
accuracy --maximize-best-checkpoint-metric`` selects on the development accuracy.

``pct_loss`` (model ``mpt_pct``, task ``--input-format pct``): a batch holds b questions Q
(English template) and their b augmented questions Q' (the same examples under templates of
sampled other languages)::

    L_PCT = CE(Q) + CE(Q') + lambda * [KL(P_Q || P_Q') + KL(P_Q' || P_Q)]

with CE = -log P^CLS(y) (MPT Eq. 2-3 with the model's verbalizer; under the default
``--verbalizer-scoring mlm`` this is the cross-entropy of the label word over the whole
vocabulary, as PCT's code trains) and the KL terms between the full-vocabulary <mask>
distributions, batch means; lambda = ``--consistency-weight`` (1, as PCT's code adds the three
terms; PCT's paper gives no weight). Validation batches (no augmented rows) have L = CE(Q).
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


def task_cross_entropy(model, sample):
    """The model's outputs for the batch, the number n of task rows (the first ones; parallel or
    augmented rows follow), -log P^CLS(y | X) over them (Eq. 3, batch mean) and its log entries."""
    out = model(**sample["net_input"])
    n = sample.get("n_task", out.size(0))
    lprobs = model.label_log_probs(out[:n])
    ce = F.nll_loss(lprobs, sample["target"])
    log = {"ce_loss": ce.detach().item(), "ncorrect": int((lprobs.argmax(-1) == sample["target"]).sum()),
           "nsentences": n, "ntokens": sample["ntokens"], "sample_size": 1}
    return out, n, ce, log


@register_criterion("mpt_loss", dataclass=MPTLossConfig)
class MPTLoss(FairseqCriterion):
    def __init__(self, task, alpha=0.5):
        super().__init__(task)
        if not 0.0 <= alpha <= 1.0:
            raise FairseqPLMError(f"--alpha {alpha}: expected a weight in [0, 1]")
        self.alpha = alpha

    def forward(self, model, sample, reduce=True):
        out, n, ce, log = task_cross_entropy(model, sample)  # Eq. 3, batch mean
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


@dataclass
class PCTLossConfig(FairseqDataclass):
    consistency_weight: float = field(
        default=1.0, metadata={"help": "lambda: weight of the symmetric KL between a question's and its augmented "
                                       "question's <mask> distributions (PCT; 1 as in its code)"})


@register_criterion("pct_loss", dataclass=PCTLossConfig)
class PCTLoss(FairseqCriterion):
    def __init__(self, task, consistency_weight=1.0):
        super().__init__(task)
        if consistency_weight < 0:
            raise FairseqPLMError(f"--consistency-weight {consistency_weight}: expected a weight >= 0")
        self.weight = consistency_weight

    def forward(self, model, sample, reduce=True):
        out, n, ce, log = task_cross_entropy(model, sample)  # the original questions
        loss = ce
        if out.size(0) > n:  # the n augmented questions follow, in the same order
            if out.size(0) != 2 * n:
                raise FairseqPLMError(f"pct_loss expects b questions and b augmented questions, got {out.size(0)} "
                                      f"rows for b = {n} (train with --input-format pct)")
            ce_aug = F.nll_loss(model.label_log_probs(out[n:]), sample["target"])
            kld = symmetric_kl(out[:n], out[n:]).mean()
            loss = ce + ce_aug + self.weight * kld
            log.update(ce_aug_loss=ce_aug.detach().item(), kld_loss=kld.detach().item(), n_kld=1)
        log["loss"] = loss.detach().item()
        return loss, 1, log

    @staticmethod
    def reduce_metrics(logging_outputs):
        MPTLoss.reduce_metrics(logging_outputs)
        total = lambda k: sum(log.get(k, 0) for log in logging_outputs)  # noqa: E731
        if total("n_kld"):
            metrics.log_scalar("ce_aug_loss", total("ce_aug_loss") / total("n_kld"), total("n_kld"), round=4)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True

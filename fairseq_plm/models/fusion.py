"""Deep fusion of a pre-trained encoder (PTM: mBERT by default, XLM-R works too) into NMT,
with a layer-wise coordinator and partitioned multi-task learning ("Deep Fusing Pre-trained
Models into Neural Machine Translation"; spec: shared/papers/deep-fusion-coordinator.md).

The PTM replaces the NMT encoder. Its N*M layers form N parts of M layers; the decoder has N
layers, and decoder layer n cross-attends C_n:

  aggregation        R^A_n = LN(FFN(R^P_{n,1} + ... + R^P_{n,M}))                   Eq. (10)
  layer-wise attn.   C_n = FFN(sum_k alpha_{n,k} R^A_k)                             Eq. (11)
                     alpha_{n,k} = softmax_k(e_{n,k})                                Eq. (12)
                     e_{n,k} = FFN(mean_i r^A_{n,i} * mean_i r^A_{k,i})              Eq. (13)
  decoder            S_n = DEC_n(C_n, S_{n-1})                                       Eq. (14)

Means run over the real (unpadded) source positions. In Eq. (13) "*" is the element-wise
product: a dot product would leave a scalar for the FFN to map to a scalar; the FFN maps the
d-dimensional product to one score (d -> d_ffn -> 1). Every coordinator FFN is
Linear-ReLU-Linear with inner size ``--coordinator-ffn-dim`` (default d_ptm): with mBERT that
makes the coordinator ~8M parameters, the scale of the 7M gap between the paper's model (171M)
and "Transformer-12 + mBERT encoder" (164M, Table 2).

Partitioned multi-task learning (Figure 2, Eq. 15-18), L = L_T + L_TWP + L_TSP + L_MLM:
  * L_T (translation) trains the decoder and the coordinator: the coordinator reads the PTM's
    states through a stop-gradient (``--ptm-update all_tasks`` lets L_T train the PTM too);
  * L_TWP (target bag of words from r^A_N, the mean of R^A_N; Eq. 15-16; y_bow is "an
    unordered set containing all words": each distinct target word counts once,
    ``--twp-bag multiset`` counts every occurrence) and L_TSP
    (contrastive target sentence prediction, cosine similarity of g(x) and g(y), g a linear
    projection; Eq. 17) train the coordinator and the PTM;
  * L_MLM (BERT's masked LM on the source) trains the PTM only.
Auxiliary tasks run in training only; validation reports the translation loss.

TSP's target side: the target sentence, re-tokenized into the PTM's vocabulary by the task
(``fusion_translation``), is read by the same PTM and the last part's aggregation layer, and
mean-pooled: g(y) = W r^A_N(y), the same function as g(x) = W r^A_N(x). Each sentence i is
scored against its target y_i, floor(B/2) other targets of the batch and ceil(B/2) synthetic
negatives (its own corruption among them): B negatives, half of each kind, as in the paper.
Synthetic negatives corrupt 50% of the target's tokens (swap, replace or delete at random,
``data/token_noise.py``). Eq. (17) has no temperature; ``--tsp-temperature`` (default 1) adds one.
"""

import logging
from dataclasses import dataclass, field, fields
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.data.data_utils import collate_tokens
from fairseq.dataclass import ChoiceEnum
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import FairseqEncoder, FairseqEncoderDecoderModel, register_model, register_model_architecture
from fairseq.models.nat import CMLMNATransformerModel
from fairseq.models.nat.cmlm_transformer import cmlm_base_architecture
from fairseq.models.nat.nonautoregressive_transformer import NATransformerDecoder
from fairseq.models.transformer import Embedding, TransformerConfig, TransformerDecoder, TransformerModel
from fairseq.models.transformer.transformer_legacy import base_architecture
from fairseq.modules.transformer_layer import TransformerDecoderLayerBase

from ..data.token_noise import bert_mask, corrupt_words, word_id_range
from ..nat.ctc import NEVER
from ..nat.refinement import lengths_to_mask, random_target_mask
from ..plm.errors import FairseqPLMError
from ..plm.fairseq_checks import check_dictionary
from ..plm.frozen import PLMArgs, build_plm
from ..plm.vocab import frame, frame_source

logger = logging.getLogger(__name__)


@dataclass
class FusionArgs(PLMArgs):
    fusion_layers: int = field(
        default=2, metadata={"help": "M: PTM layers per part; the decoder gets N = PTM layers / M layers "
                                     "(Table 7: M in {1, 2, 3, 4, 6}; default 2)"})
    coordinator: ChoiceEnum(["layerwise", "none"]) = field(
        default="layerwise", metadata={"help": "layerwise: Eq. 10-14; none: every decoder layer attends the "
                                               "PTM's top layer (Table 2, lines 2-3: mBERT as the encoder of "
                                               "Transformer-12; --decoder-layers sets the depth)"})
    coordinator_ffn_dim: int = field(
        default=0, metadata={"help": "inner size of the coordinator's FFNs (0: the PTM's hidden size)"})
    ptm_update: ChoiceEnum(["partitioned", "all_tasks", "frozen"]) = field(
        default="partitioned", metadata={"help": "partitioned: L_T stops at the coordinator (Figure 2); "
                                                 "all_tasks: L_T trains the PTM too; frozen: no task trains "
                                                 "the PTM (Table 6)"})
    no_twp: bool = field(default=False, metadata={"help": "drop target words prediction (Table 6: -L_TWP)"})
    twp_bag: ChoiceEnum(["set", "multiset"]) = field(
        default="set", metadata={"help": "TWP's bag of words y_bow (Eq. 15): set (the paper: 'an unordered set "
                                         "containing all words', each distinct word once) or multiset (every "
                                         "occurrence counts)"})
    no_tsp: bool = field(default=False, metadata={"help": "drop target sentence prediction (Table 6: -L_TSP)"})
    no_mlm: bool = field(default=False, metadata={"help": "drop the masked-LM task on the source"})
    mlm_prob: float = field(default=0.15, metadata={"help": "MLM: share of source tokens chosen (BERT: 0.15)"})
    tsp_corrupt_ratio: float = field(
        default=0.5, metadata={"help": "TSP synthetic negatives: share of the target's tokens swapped, "
                                       "replaced or deleted (paper: 50%)"})
    tsp_temperature: float = field(
        default=1.0, metadata={"help": "TSP: cosine similarities are divided by this (Eq. 17: 1)"})
    decoder_like_ptm: bool = field(
        default=False, metadata={"help": "decoder layers, width, FFN width and heads = the PTM's (set by "
                                         "--arch xlmr_at_init)"})
    share_ptm_embeddings: bool = field(
        default=False, metadata={"help": "the decoder's input and output embeddings are the PTM's word "
                                         "embeddings (the target vocabulary must be the PTM's; set by "
                                         "--arch xlmr_at_init)"})


def masked_mean(x, padding_mask):
    """[B, T, C] with [B, T] padding (True = pad) -> [B, C], the mean over real positions."""
    keep = (~padding_mask).unsqueeze(-1).to(x.dtype)
    return (x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)


class FFN(nn.Sequential):
    def __init__(self, d_in, d_inner, d_out, dropout=0.0):
        super().__init__(nn.Linear(d_in, d_inner), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_inner, d_out))


class Coordinator(nn.Module):
    """The layer-wise coordination structure (Figure 1): N aggregation layers (Eq. 10), the
    layer-wise attention (Eq. 11-13)."""

    def __init__(self, num_parts, d_ptm, d_dec, d_ffn, dropout=0.0):
        super().__init__()
        self.aggregate_ffn = nn.ModuleList([FFN(d_ptm, d_ffn, d_ptm, dropout) for _ in range(num_parts)])
        self.aggregate_ln = nn.ModuleList([nn.LayerNorm(d_ptm) for _ in range(num_parts)])
        self.score = FFN(d_ptm, d_ffn, 1, dropout)           # e_{n,k}, Eq. (13)
        self.map = FFN(d_ptm, d_ffn, d_dec, dropout)         # d_ptm -> d_dec, Eq. (11)

    @property
    def num_parts(self):
        return len(self.aggregate_ffn)

    def aggregate(self, n, part_states: List[torch.Tensor]):
        """R^A_n = LN(FFN(R^P_{n,1} + ... + R^P_{n,M})), Eq. (10); [B, T, d_ptm]."""
        return self.aggregate_ln[n](self.aggregate_ffn[n](torch.stack(part_states).sum(dim=0)))

    def attention(self, aggregated: List[torch.Tensor], padding_mask):
        """alpha [B, N, N] (row n: the weights of decoder layer n over R^A_1..R^A_N), Eq. (12-13)."""
        means = torch.stack([masked_mean(r, padding_mask) for r in aggregated], dim=1)  # [B, N, d]
        e = self.score(means[:, :, None, :] * means[:, None, :, :]).squeeze(-1)        # [B, N, N]
        return e.softmax(dim=-1)

    def forward(self, layer_states: List[torch.Tensor], padding_mask):
        """The PTM's N*M layer outputs [B, T, d_ptm] -> (C [N, B, T, d_dec], R^A list)."""
        m = len(layer_states) // self.num_parts
        aggregated = [self.aggregate(n, layer_states[n * m:(n + 1) * m]) for n in range(self.num_parts)]
        alpha = self.attention(aggregated, padding_mask)
        mixed = torch.einsum("bnk,kbtd->nbtd", alpha, torch.stack(aggregated))          # sum_k alpha R^A_k
        return self.map(mixed), aggregated                                              # Eq. (11)


class AuxiliaryHeads(nn.Module):
    """The output layers of the intermediate tasks (part of the coordinator's parameters θ_C):
    TWP's bag-of-words classifier over the target vocabulary (Eq. 15) and TSP's projection g
    (Eq. 17)."""

    def __init__(self, d_ptm, target_vocab, twp, tsp):
        super().__init__()
        self.twp = nn.Linear(d_ptm, target_vocab) if twp else None
        self.tsp = nn.Linear(d_ptm, d_ptm) if tsp else None


class FusionEncoder(FairseqEncoder):
    """PTM + coordinator: the encoder of both the AT and the NAT model. ``encoder_out`` holds
    the usual keys, with ``encoder_out`` = [C_N] (what fairseq's generic code expects: T x B x C)
    and ``coordinated`` = [C_1..C_N stacked: N x T x B x C], read by ``CoordinatedDecoderLayer``."""

    def __init__(self, args, dictionary, plm, target_dictionary):
        super().__init__(dictionary)
        self.plm = plm
        self.cfg = args
        self.bos, self.eos, self.pad = dictionary.bos(), dictionary.eos(), dictionary.pad()
        self.mask_index = getattr(dictionary, "mask_index", None)
        self.word_range = word_id_range(dictionary)
        self.target_pad, self.target_specials = target_dictionary.pad(), sorted(
            {target_dictionary.pad(), target_dictionary.eos(), target_dictionary.bos(), target_dictionary.unk()})
        d_ptm, layers = plm.cfg.hidden_size, plm.cfg.num_layers
        self.part_size = args.fusion_layers if args.coordinator == "layerwise" else layers
        self.coordinator = None
        if args.coordinator == "layerwise":
            self.coordinator = Coordinator(layers // args.fusion_layers, d_ptm, args.decoder_embed_dim,
                                           args.coordinator_ffn_dim or d_ptm, args.dropout)
        self.heads = AuxiliaryHeads(d_ptm, len(target_dictionary), not args.no_twp, not args.no_tsp)
        self.use_mlm = not args.no_mlm

    @property
    def has_auxiliary_tasks(self):
        return self.heads.twp is not None or self.heads.tsp is not None or self.use_mlm

    # ---------------------------------------------------------------- translation path

    def frame(self, src_tokens):
        """fairseq's ``x </s>`` (right-padded) -> the PTM's ``[CLS] x [SEP]`` and its padding."""
        framed, lengths = frame_source(src_tokens, self.bos, self.eos, self.pad)
        return framed, ~lengths_to_mask(lengths + 2, framed.size(1))

    def read(self, tokens, padding_mask):
        """PTM layer outputs [B, T, d] for layers 1..N*M."""
        return self.plm(tokens, padding_mask=padding_mask, return_hidden_states=True).hidden_states[1:]

    def summary(self, layer_states, padding_mask):
        """r^A_N (Eq. 16): the mean of the last part's aggregation R^A_N, [B, d_ptm]."""
        last = layer_states[-self.part_size:]
        top = self.coordinator.aggregate(self.coordinator.num_parts - 1, last) if self.coordinator else last[-1]
        return masked_mean(top, padding_mask)

    def forward(self, src_tokens, src_lengths=None, **unused):
        tokens, pad = self.frame(src_tokens)
        states = self.read(tokens, pad)
        # Figure 2: L_T reaches the coordinator but not the PTM (unless --ptm-update all_tasks)
        through = states if self.cfg.ptm_update == "all_tasks" else [h.detach() for h in states]
        if self.coordinator is not None:
            c, aggregated = self.coordinator(through, pad)
        else:
            c, aggregated = through[-1][None], None
        c = c.transpose(1, 2)  # [N, T, B, d]
        out = {
            "encoder_out": [c[-1]], "coordinated": [c], "encoder_padding_mask": [pad],
            "encoder_embedding": [], "encoder_states": [], "src_tokens": [], "src_lengths": [],
        }
        if self.training and (self.heads.twp is not None or self.heads.tsp is not None):
            # r^A_N with the PTM's gradient, for TWP and TSP
            if through is states and aggregated is not None:
                out["summary"] = [masked_mean(aggregated[-1], pad)]
            else:  # recompute the last part's aggregation with the PTM's gradient (cheap: one FFN)
                out["summary"] = [self.summary(states, pad)]
        return out

    def reorder_encoder_out(self, encoder_out, new_order):
        reordered = {k: v for k, v in encoder_out.items()}
        reordered["encoder_out"] = [x.index_select(1, new_order) for x in encoder_out["encoder_out"]]
        reordered["coordinated"] = [x.index_select(2, new_order) for x in encoder_out["coordinated"]]
        reordered["encoder_padding_mask"] = [x.index_select(0, new_order) for x in encoder_out["encoder_padding_mask"]]
        reordered["summary"] = [x.index_select(0, new_order) for x in encoder_out.get("summary", [])]
        return reordered

    def max_positions(self):
        return self.plm.cfg.usable_positions - 2  # [CLS] x [SEP]

    # ---------------------------------------------------------------- intermediate tasks

    def auxiliary_outputs(self, encoder_out, src_tokens, target, ptm_target):
        """Inputs of the partitioned tasks' losses (computed by the ``deep_fusion_loss`` criterion)."""
        out = {}
        if self.heads.twp is not None:  # Eq. (15): -sum_{y_j in y_bow} log P(y_j | r^A_N)
            lprobs = F.log_softmax(self.heads.twp(encoder_out["summary"][0]).float(), dim=-1)
            words = ~torch.isin(target, torch.tensor(self.target_specials, device=target.device))
            if self.cfg.twp_bag == "set":
                words = words & ~repeated_earlier(target)
            out["twp"] = {"lprobs": lprobs.gather(1, target), "mask": words}
        if self.heads.tsp is not None:
            if ptm_target is None:
                raise FairseqPLMError("target sentence prediction needs the target in the PTM's vocabulary: "
                                      "train with --task fusion_translation (or pass --no-tsp)")
            out["tsp"] = self.target_sentence_prediction(encoder_out["summary"][0], ptm_target)
        if self.use_mlm:
            out["mlm"] = self.masked_lm(src_tokens)
        return out

    def target_sentence_prediction(self, summary, ptm_target):
        """Eq. (17): logits [B, 2B] of sentence i over [y_1..y_B, synthetic_1..synthetic_B],
        the candidates a row may not use at NEVER; the positive of row i is column i."""
        b = ptm_target.size(0)
        lengths = ptm_target.ne(self.pad).long().sum(dim=1)
        rows = [row[:n].tolist() for row, n in zip(ptm_target.cpu(), lengths.tolist())]
        negatives = [corrupt_words(r, *self.word_range, ratio=self.cfg.tsp_corrupt_ratio) for r in rows]
        content = collate_tokens([torch.tensor(s, dtype=torch.long) for s in rows + negatives],
                                 self.pad).to(ptm_target.device)
        n = content.ne(self.pad).long().sum(dim=1)
        framed = frame(content, n, self.bos, self.eos, self.pad)
        pad = ~lengths_to_mask(n + 2, framed.size(1))
        g_y = self.heads.tsp(self.summary(self.read(framed, pad), pad))
        g_x = self.heads.tsp(summary)
        sim = F.cosine_similarity(g_x[:, None, :].float(), g_y[None, :, :].float(), dim=-1)
        return {"logits": (sim / self.cfg.tsp_temperature).masked_fill(~tsp_candidates(b, sim.device), NEVER)}

    def masked_lm(self, src_tokens):
        """L_MLM inputs: BERT masking of the source, the PTM's own MLM head (Eq. 8-9)."""
        tokens, pad = self.frame(src_tokens)
        maskable = ~pad & tokens.ne(self.bos) & tokens.ne(self.eos)
        inputs, chosen = bert_mask(tokens, maskable, self.mask_index, *self.word_range, prob=self.cfg.mlm_prob)
        hidden = self.plm(inputs, padding_mask=pad).hidden
        logits = self.plm.logits(hidden[chosen]).float()
        return {"lprobs": F.log_softmax(logits, dim=-1), "targets": tokens[chosen]}


def repeated_earlier(tokens):
    """[B, T] -> bool, True where the token already occurred earlier in its row: dropping
    those positions leaves each row's set of words (TWP's y_bow, Eq. 15)."""
    same = tokens[:, :, None] == tokens[:, None, :]                               # [B, T(j), T(k)]
    earlier = torch.ones(tokens.size(1), tokens.size(1), dtype=torch.bool, device=tokens.device).tril(-1)
    return (same & earlier).any(dim=-1)


def tsp_candidates(b, device):
    """[B, 2B] bool: row i may use its positive y_i, floor(B/2) other targets of the batch and
    ceil(B/2) synthetic sentences, always including its own corruption."""
    eye = torch.eye(b, dtype=torch.bool, device=device)

    def pick(scores, k):
        chosen = torch.zeros(b, b, dtype=torch.bool, device=device)
        return chosen.scatter(1, scores.topk(k, dim=1).indices, True) if k > 0 else chosen

    in_batch = pick(torch.rand(b, b, device=device).masked_fill(eye, -1.0), min(b - 1, b // 2))
    synthetic = pick(torch.rand(b, b, device=device).masked_fill(eye, 2.0), (b + 1) // 2)
    return torch.cat([in_batch | eye, synthetic], dim=1)


# -------------------------------------------------------------------- decoders

class CoordinatedDecoderLayer(TransformerDecoderLayerBase):
    """A fairseq decoder layer that cross-attends its own C_n (Eq. 14) when handed the stack."""

    source_layer = 0

    def forward(self, x, encoder_out=None, encoder_padding_mask=None, *args, **kwargs):
        if encoder_out is not None and encoder_out.dim() == 4:
            encoder_out = encoder_out[min(self.source_layer, encoder_out.size(0) - 1)]
        return super().forward(x, encoder_out, encoder_padding_mask, *args, **kwargs)


class CoordinatedDecoderMixin:
    """Mixed into fairseq's AT and NAT Transformer decoders: layers are
    ``CoordinatedDecoderLayer``s, and their feature extraction passes the stack C_1..C_N where
    fairseq passes the encoder output."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for i, layer in enumerate(self.layers):
            layer.source_layer = i

    def build_decoder_layer(self, args, no_encoder_attn=False):
        return CoordinatedDecoderLayer(TransformerConfig.from_namespace(args), no_encoder_attn)

    def extract_features(self, prev_output_tokens, encoder_out=None, *args, **kwargs):
        if encoder_out is not None:
            encoder_out = {**encoder_out, "encoder_out": encoder_out["coordinated"]}
        return super().extract_features(prev_output_tokens, encoder_out, *args, **kwargs)


class FusionDecoder(CoordinatedDecoderMixin, TransformerDecoder):
    pass


class FusionNATDecoder(CoordinatedDecoderMixin, NATransformerDecoder):
    pass


# -------------------------------------------------------------------- models

class FusionModelMixin:
    """What the AT and NAT deep-fusion models share: options, PTM and encoder construction."""

    @staticmethod
    def add_fusion_args(parser):
        # no defaults in the parser, so that architectures can set theirs (fusion_defaults fills the rest)
        gen_parser_from_dataclass(parser, FusionArgs(), delete_default=True)

    @classmethod
    def build_fusion_encoder(cls, args, task):
        plm = build_plm(args)
        if plm.cfg.family not in ("bert", "roberta"):
            raise FairseqPLMError(f"--plm {args.plm} is a {plm.cfg.family} model; deep fusion needs a "
                                  f"bidirectional encoder (mBERT, XLM-R)")
        src = task.source_dictionary
        check_dictionary(src, plm, args.plm, what=f"dict.{task.cfg.source_lang}.txt", data=task.cfg.data)
        if args.decoder_like_ptm:  # the PTM's shape, whatever the architecture's defaults said
            c = plm.cfg
            args.decoder_layers, args.decoder_embed_dim = c.num_layers, c.hidden_size
            args.decoder_ffn_embed_dim, args.decoder_attention_heads = c.intermediate_size, c.num_heads
            args.encoder_embed_dim = args.decoder_input_dim = args.decoder_output_dim = c.hidden_size
        if args.coordinator == "layerwise":
            if args.fusion_layers < 1 or plm.cfg.num_layers % args.fusion_layers:
                raise FairseqPLMError(f"--fusion-layers {args.fusion_layers} does not divide the PTM's "
                                      f"{plm.cfg.num_layers} layers into equal parts")
            args.decoder_layers = plm.cfg.num_layers // args.fusion_layers  # N
        elif args.decoder_embed_dim != plm.cfg.hidden_size:
            raise FairseqPLMError(f"--coordinator none: the decoder attends the PTM directly, so "
                                  f"--decoder-embed-dim must be the PTM's {plm.cfg.hidden_size}")
        if not args.no_mlm and getattr(src, "mask_index", None) is None:
            raise FairseqPLMError(f"the PTM vocabulary of {args.plm} has no mask token; pass --no-mlm")
        trains_ptm = args.ptm_update == "all_tasks" or (
            args.ptm_update == "partitioned" and not (args.no_twp and args.no_tsp and args.no_mlm))
        if not trains_ptm:
            if args.ptm_update == "partitioned":
                logger.info("no task trains the PTM (--no-twp --no-tsp --no-mlm): it stays frozen")
            args.no_mlm = True  # MLM trains the PTM only
            plm.freeze(keep_eval=not args.plm_dropout)
        elif args.no_mlm:
            plm.lm_head.requires_grad_(False)  # unused: no gradient would reach it
        return FusionEncoder(args, src, plm, task.target_dictionary)

    @classmethod
    def build_target_embedding(cls, args, task, plm):
        d = task.target_dictionary
        if not args.share_ptm_embeddings:
            return Embedding(len(d), args.decoder_embed_dim, d.pad())
        # the PTM's word embeddings, read through an nn.Embedding that knows the padding id
        # (fairseq's decoder takes it from there); one shared Parameter, trained by both sides
        if list(d.symbols) != list(task.source_dictionary.symbols) or len(d) != plm.cfg.vocab_size:
            raise FairseqPLMError(
                f"--share-ptm-embeddings: the target dictionary (dict.{task.cfg.target_lang}.txt, {len(d)} "
                f"entries) must be the PTM's vocabulary ({plm.cfg.vocab_size} entries, as dict."
                f"{task.cfg.source_lang}.txt): binarize the target with --tgtdict {args.plm} "
                f"(--task plm_translation data)")
        if args.decoder_embed_dim != plm.cfg.hidden_size:
            raise FairseqPLMError(f"--share-ptm-embeddings: --decoder-embed-dim must be the PTM's "
                                  f"{plm.cfg.hidden_size}")
        embed = nn.Embedding(len(d), plm.cfg.hidden_size, padding_idx=d.pad())
        embed.weight = plm.word_embeddings.weight
        return embed

    def max_positions(self):
        return self.encoder.max_positions(), self.decoder.max_positions()


@register_model("deep_fusion")
class DeepFusionModel(FusionModelMixin, FairseqEncoderDecoderModel):
    """Autoregressive deep fusion (Table 1): PTM + coordinator encoder, Transformer decoder."""

    def __init__(self, args, encoder, decoder):
        super().__init__(encoder, decoder)
        self.args = args

    @staticmethod
    def add_args(parser):
        TransformerModel.add_args(parser)
        FusionModelMixin.add_fusion_args(parser)

    @classmethod
    def build_model(cls, args, task):
        deep_fusion_base(args)
        encoder = cls.build_fusion_encoder(args, task)
        decoder = FusionDecoder(args, task.target_dictionary, cls.build_target_embedding(args, task, encoder.plm))
        return cls(args, encoder, decoder)

    def forward(self, src_tokens, src_lengths, prev_output_tokens, tgt_tokens=None, ptm_target=None, **kwargs):
        encoder_out = self.encoder(src_tokens, src_lengths=src_lengths)
        x, extra = self.decoder(prev_output_tokens, encoder_out=encoder_out, src_lengths=src_lengths)
        if self.training and self.encoder.has_auxiliary_tasks:
            extra["auxiliary"] = self.encoder.auxiliary_outputs(encoder_out, src_tokens, tgt_tokens, ptm_target)
        return x, extra


@register_model("deep_fusion_cmlm")
class DeepFusionCMLMModel(FusionModelMixin, CMLMNATransformerModel):
    """Non-autoregressive deep fusion (Table 3): the same encoder, a Mask-Predict decoder
    (Ghazvininejad et al. 2019), decoded by fairseq's IterativeRefinementGenerator. The target
    is framed ``<s> y </s>`` and its length counts both, as in fairseq's ``translation_lev``."""

    @staticmethod
    def add_args(parser):
        CMLMNATransformerModel.add_args(parser)
        FusionModelMixin.add_fusion_args(parser)

    @classmethod
    def build_model(cls, args, task):
        deep_fusion_cmlm_base(args)
        if getattr(args, "src_embedding_copy", False):
            raise FairseqPLMError("--src-embedding-copy is not supported by deep_fusion_cmlm")
        encoder = cls.build_fusion_encoder(args, task)
        decoder = FusionNATDecoder(args, task.target_dictionary,
                                   cls.build_target_embedding(args, task, encoder.plm))
        return cls(args, encoder, decoder)

    def forward(self, src_tokens, src_lengths, prev_output_tokens=None, tgt_tokens=None, ptm_target=None, **kwargs):
        encoder_out = self.encoder(src_tokens, src_lengths=src_lengths)
        target = torch.cat([tgt_tokens.new_full((tgt_tokens.size(0), 1), self.bos), tgt_tokens], dim=1)
        content = target.ne(self.pad) & target.ne(self.bos) & target.ne(self.eos)
        masked = random_target_mask(content)
        length_out = self.decoder.forward_length(normalize=False, encoder_out=encoder_out)
        length_tgt = self.decoder.forward_length_prediction(length_out, encoder_out, target)
        logits = self.decoder(normalize=False, prev_output_tokens=target.masked_fill(masked, self.unk),
                              encoder_out=encoder_out)
        # the loss reads the masked positions only: normalize those alone (not all |y| positions)
        terms = {
            "word_ins": {"lprobs": F.log_softmax(logits[masked].float(), dim=-1), "targets": target[masked],
                         "mask": None},
            "length": {"lprobs": F.log_softmax(length_out.float(), dim=-1), "targets": length_tgt, "mask": None,
                       "factor": self.decoder.length_loss_factor, "no_smoothing": True},
        }
        if self.training and self.encoder.has_auxiliary_tasks:
            terms["auxiliary"] = self.encoder.auxiliary_outputs(encoder_out, src_tokens, tgt_tokens, ptm_target)
        return terms


def _defaults(args, ffn=3072, heads=12, dim=768):
    """FusionArgs defaults, and the paper's decoder: d_dec = 768 (Transformer-12 width),
    post-norm (Eq. 3-5)."""
    for f in fields(FusionArgs):
        setattr(args, f.name, getattr(args, f.name, f.default))
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", dim)
    args.decoder_ffn_embed_dim = getattr(args, "decoder_ffn_embed_dim", ffn)
    args.decoder_attention_heads = getattr(args, "decoder_attention_heads", heads)
    args.decoder_layers = getattr(args, "decoder_layers", 6)
    args.encoder_embed_dim = args.decoder_embed_dim  # fairseq sizes length/cross-attention by it
    args.share_decoder_input_output_embed = getattr(args, "share_decoder_input_output_embed", True)
    args.share_all_embeddings = False  # source: the PTM's vocabulary; target: the NMT's own
    args.dropout = getattr(args, "dropout", 0.1)
    args.attention_dropout = getattr(args, "attention_dropout", 0.1)


@register_model_architecture("deep_fusion", "deep_fusion")
def deep_fusion_base(args):
    _defaults(args)
    base_architecture(args)


@register_model_architecture("deep_fusion_cmlm", "deep_fusion_cmlm")
def deep_fusion_cmlm_base(args):
    _defaults(args)
    cmlm_base_architecture(args)


def _table2_baseline(args, ptm_update):
    args.coordinator = getattr(args, "coordinator", "none")
    args.ptm_update = getattr(args, "ptm_update", ptm_update)
    args.no_twp = args.no_tsp = args.no_mlm = True  # translation only (flags default to False)


@register_model_architecture("deep_fusion", "deep_fusion_mbert_init_encoder")
def deep_fusion_mbert_init_encoder(args):
    """Table 2, line 2: Transformer-12 whose encoder is mBERT, fine-tuned by translation only."""
    _table2_baseline(args, "all_tasks")
    deep_fusion_base(args)


@register_model_architecture("deep_fusion", "deep_fusion_frozen_mbert_encoder")
def deep_fusion_frozen_mbert_encoder(args):
    """Table 2, line 3: Transformer-12 with a frozen mBERT as its encoder."""
    _table2_baseline(args, "frozen")
    deep_fusion_base(args)


@register_model_architecture("deep_fusion", "xlmr_at_init")
def xlmr_at_init(args):
    """SGA Table 1's "XLM-R w. AT initialization" (§5.2: "we initialize the encoder of an
    autoregressive Transformer with the weights of XLM-R, and fine-tune the whole parameters"):
    the PTM is the encoder, fine-tuned by the translation loss, with no coordinator (the
    decoder attends its top layer) and no auxiliary task. The paper gives the parameter counts
    only (390M with XLM-R base, 960M with large); what matches them: a decoder of the PTM's
    shape (as many layers, width, FFN and heads: 12 x 768 for base, 24 x 1024 for large) whose
    input and output embeddings are XLM-R's own word embeddings, so that the target is in
    XLM-R's vocabulary (SGA's ``plm_translation`` data): 278M + 113M = 391M, 560M + 403M =
    963M. Our choices where the paper says nothing: the decoder reads those embeddings as
    XLM-R reads them, unscaled and followed by a LayerNorm (``--no-scale-embedding
    --layernorm-embedding``); sinusoidal positions, post-norm, dropout 0.1 (fairseq's
    transformer defaults). Training setting (§5.1, fine-tuning PLMs): lr 3e-5, 4K tokens per
    batch, at most 80K updates."""
    _table2_baseline(args, "all_tasks")
    args.decoder_like_ptm = args.share_ptm_embeddings = True
    args.no_scale_embedding = args.layernorm_embedding = True
    deep_fusion_base(args)


@register_model_architecture("cmlm_transformer", "cmlm_transformer_two_vocab")
def cmlm_transformer_two_vocab(args):
    """fairseq's Mask-Predict (``cmlm_transformer``) with a source and a target vocabulary of
    their own, the NAT baseline next to deep fusion (Table 3) on data whose source is in the
    PTM's vocabulary: ``cmlm_base_architecture`` shares all embeddings, which needs one joined
    dictionary, and fairseq has no flag that turns this off."""
    args.share_all_embeddings = False
    cmlm_base_architecture(args)

"""``ctc_nat``: a from-scratch non-autoregressive Transformer trained with CTC
(Libovický & Helcl 2018), the "Transformer (NAT)" baseline of SGA Table 1.

fairseq's Transformer encoder reads the source. Each encoder state h_i is split into
``--upsample-ratio`` (default 2) decoder input states by one linear projection,
W_spl h_i -> [h_i1 ... h_ir] (L&H §3, "state splitting"). Non-causal decoder layers
self-attend over those states and cross-attend to the encoder. Output distributions are
scored with CTC against the target (blank: ``<s>``, which never occurs in fairseq targets,
or ``<mask>`` on a PLM vocabulary; see nat/ctc.py) and decoded in one step: arg-max
and the batched CTC collapse. It runs through ``fairseq-generate`` with fairseq's
``IterativeRefinementGenerator`` (one step) under ``--task plm_translation``.

Architectures: ``ctc_nat`` (transformer-base sizes), ``ctc_nat_big`` (transformer-big,
dropout 0.3: the SGA paper's NAT baseline setting).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.iterative_refinement_generator import DecoderOut
from fairseq.models import FairseqDecoder, FairseqEncoderDecoderModel, register_model, register_model_architecture
from fairseq.models.transformer import (TransformerConfig, TransformerEncoderBase, TransformerModel,
                                        TransformerModelBase, base_architecture,
                                        transformer_vaswani_wmt_en_de_big)
from fairseq.modules import LayerNorm, PositionalEmbedding
from fairseq.modules.transformer_layer import TransformerDecoderLayerBase

from ..nat.ctc import NEVER, ctc_blank, ctc_collapse_in_place
from ..nat.refinement import lengths_to_mask
from ..plm.shortlist import SHORTLIST_HELP, build_output_shortlist


class CTCNATDecoder(FairseqDecoder):
    def __init__(self, cfg, dictionary, embed_tokens, upsample_ratio, output_shortlist=None):
        super().__init__(dictionary)
        d = cfg.decoder.embed_dim
        self.ratio = upsample_ratio
        self.split = nn.Linear(cfg.encoder.embed_dim, upsample_ratio * d)  # state splitting
        self.embed_positions = PositionalEmbedding(cfg.max_target_positions, d, dictionary.pad(),
                                                   learned=cfg.decoder.learned_pos)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList([TransformerDecoderLayerBase(cfg) for _ in range(cfg.decoder.layers)])
        self.layer_norm = LayerNorm(d) if cfg.decoder.normalize_before else None
        if cfg.share_decoder_input_output_embed:
            self.output_weight = embed_tokens.weight
        else:
            self.output_weight = nn.Parameter(torch.empty(len(dictionary), d))
            nn.init.normal_(self.output_weight, mean=0, std=d ** -0.5)
        self.blank, self.pad = ctc_blank(dictionary), dictionary.pad()
        forbidden = {dictionary.pad(), dictionary.eos(), dictionary.bos()} - {self.blank}
        self.register_buffer("forbidden", torch.tensor(sorted(forbidden)), persistent=False)
        self.max_target_positions = cfg.max_target_positions
        # plm/shortlist.py: score only these pieces (None: the whole vocabulary); forward()
        # then returns log-probabilities over shortlist positions
        self.output_shortlist = output_shortlist

    def output_index(self, ids):
        """Vocabulary ids -> indices into forward()'s last dimension."""
        sl = self.output_shortlist
        return ids if sl is None else sl.to_positions(ids, self.dictionary.unk())

    def output_ids(self, index):
        """Indices into forward()'s last dimension -> vocabulary ids."""
        return index if self.output_shortlist is None else self.output_shortlist.to_ids(index)

    def canvas_mask(self, encoder_out):
        """[B, r*S]: True on the r x |x| decoder positions of each sentence."""
        src_pad = encoder_out["encoder_padding_mask"][0]
        return lengths_to_mask((~src_pad).long().sum(dim=1) * self.ratio, src_pad.size(1) * self.ratio)

    def forward(self, encoder_out, **unused):
        """Log-probabilities over the canvas [B, r*S, V] and the canvas mask [B, r*S]."""
        h = encoder_out["encoder_out"][0].transpose(0, 1)  # [B, S, C]
        src_pad = encoder_out["encoder_padding_mask"][0]
        # real source states first (CTC frames must be a prefix), whichever side was padded
        order = torch.sort(src_pad.to(torch.int8), dim=1, stable=True).indices
        h = h.gather(1, order[..., None].expand_as(h))
        b, s, _ = h.shape
        x = self.split(h).view(b, s * self.ratio, -1)
        canvas_mask = self.canvas_mask(encoder_out)
        positions = self.embed_positions(torch.where(canvas_mask, self.pad + 1, self.pad))  # 1..n, pads skipped
        x = self.dropout(x + positions)
        x = x.transpose(0, 1)
        for layer in self.layers:
            x, _, _ = layer(x, encoder_out["encoder_out"][0], src_pad, self_attn_padding_mask=~canvas_mask)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        x = x.transpose(0, 1)
        if self.output_shortlist is None:
            logits = F.linear(x, self.output_weight).float()
        else:
            logits = self.output_shortlist.logits(x, self.output_weight).float()
        logits = logits.index_fill(-1, self.output_index(self.forbidden), NEVER)
        return F.log_softmax(logits, dim=-1), canvas_mask

    def max_positions(self):
        return self.max_target_positions


@register_model("ctc_nat")
class CTCNATModel(FairseqEncoderDecoderModel):
    allow_length_beam = False

    @staticmethod
    def add_args(parser):
        TransformerModel.add_args(parser)
        parser.add_argument("--upsample-ratio", type=int, metavar="R",
                            help="decoder length = R x source length (Libovický & Helcl: 2)")
        parser.add_argument("--output-shortlist", default="none", metavar="none|auto|FILE", help=SHORTLIST_HELP)

    @classmethod
    def build_model(cls, args, task):
        ctc_nat_base(args)
        cfg = TransformerConfig.from_namespace(args)
        src_dict, tgt_dict = task.source_dictionary, task.target_dictionary
        src_embed = TransformerModelBase.build_embedding(cfg, src_dict, cfg.encoder.embed_dim)
        if args.share_all_embeddings:
            if src_dict != tgt_dict and list(src_dict.symbols) != list(tgt_dict.symbols):
                raise ValueError("--share-all-embeddings requires a joined dictionary")
            tgt_embed = src_embed
            cfg.share_decoder_input_output_embed = True
        else:
            tgt_embed = TransformerModelBase.build_embedding(cfg, tgt_dict, cfg.decoder.embed_dim)
        encoder = TransformerEncoderBase(cfg, src_dict, src_embed)
        shortlist = build_output_shortlist(getattr(args, "output_shortlist", "none"), tgt_dict, task.cfg.data,
                                           task.cfg.source_lang, task.cfg.target_lang,
                                           extra_specials=[ctc_blank(tgt_dict)])
        decoder = CTCNATDecoder(cfg, tgt_dict, tgt_embed, args.upsample_ratio, shortlist)
        return cls(encoder, decoder)

    @property
    def blank(self):
        return self.decoder.blank

    def max_positions(self):
        # the canvas (ratio x source) must fit the target positions
        return (min(self.encoder.max_positions(), self.decoder.max_positions() // self.decoder.ratio),
                self.decoder.max_positions())

    def forward(self, src_tokens, src_lengths, prev_output_tokens=None, tgt_tokens=None, **unused):
        enc = self.encoder(src_tokens, src_lengths=src_lengths)
        lprobs, canvas_mask = self.decoder(enc)
        eos, pad = self.decoder.dictionary.eos(), self.decoder.pad
        target = tgt_tokens.masked_fill(tgt_tokens.eq(eos), pad)
        blank = int(self.decoder.output_index(torch.tensor(self.blank, device=target.device)))
        return {"ctc": {"ctc": True, "lprobs": lprobs, "input_mask": canvas_mask,
                        "targets": self.decoder.output_index(target), "target_mask": target.ne(pad),
                        "blank": blank}}

    # IterativeRefinementGenerator contract: one step, then a fixed point
    def forward_encoder(self, encoder_inputs):
        src_tokens, src_lengths = encoder_inputs
        return self.encoder(src_tokens, src_lengths=src_lengths)

    def initialize_output_tokens(self, encoder_out, src_tokens):
        canvas = self.decoder.canvas_mask(encoder_out)
        tokens = torch.full(canvas.shape, self.blank, dtype=torch.long, device=canvas.device)
        tokens = tokens.masked_fill(~canvas, self.decoder.pad)
        return DecoderOut(output_tokens=tokens, output_scores=torch.zeros(canvas.shape, device=canvas.device),
                          attn=None, step=0, max_step=0, history=None)

    def forward_decoder(self, decoder_out, encoder_out, **unused):
        if decoder_out.step > 0:
            return decoder_out
        lprobs, canvas_mask = self.decoder(encoder_out)
        scores, tokens = lprobs.max(dim=-1)
        out, _, scores = ctc_collapse_in_place(self.decoder.output_ids(tokens), self.blank, self.decoder.pad,
                                               canvas_mask, scores)
        history = None if decoder_out.history is None else decoder_out.history + [out.clone()]
        return decoder_out._replace(output_tokens=out, output_scores=scores, history=history)


@register_model_architecture("ctc_nat", "ctc_nat")
def ctc_nat_base(args):
    args.upsample_ratio = getattr(args, "upsample_ratio", None) or 2
    base_architecture(args)


@register_model_architecture("ctc_nat", "ctc_nat_big")
def ctc_nat_big(args):
    args.dropout = getattr(args, "dropout", 0.3)
    transformer_vaswani_wmt_en_de_big(args)
    ctc_nat_base(args)

"""Python API: one frozen PLM, several prompt sets ("directions"), raw text in and out.

    from fairseq_plm import Translator

    t = Translator(plm="plms/mgpt")                       # optional: else each checkpoint's own PLM
    t.add_direction("en-de", "ckpt/en-de/checkpoint_best.pt", beam=4)
    t.add_direction("en-ro", "ckpt/en-ro/checkpoint_best.pt")
    t.add_direction("de-en", "ckpt/sga-de-en/checkpoint_best.pt", iter_decode_max_iter=10)
    t.translate(["Open the file", "Save all"], "en-de")
    t.translate(["Open the file", "Save all"], ["en-de", "en-ro"])   # one direction per text

* **One PLM**: every direction is a prompt checkpoint (``msp`` and its Table 5 variants,
  ``prefix_tuning``, ``prompt_tuning``, ``sga`` and its variants). Checkpoints trained on the
  same PLM share one frozen instance (``plm/shared.py``), so a direction costs its prompts
  only. Checkpoints are read with fairseq's ``checkpoint_utils.load_checkpoint_to_cpu``, the
  one function this package's safe loading guards (``fairseq_plm/compat.py``).
* **Raw text**: the PLM's own tokenizer (sentencepiece or WordPiece) and dictionary; output is
  detokenized the same way. Optional per-direction text processing of MSP App. A.2
  (``remove_diacritics`` on a Romanian source, ``zh_punct`` on a Chinese output).
* **The method's own generator**: fairseq's ``SequenceGenerator`` (beam search) for the MSP
  family, ``IterativeRefinementGenerator`` for SGA.
* **Mixed batches**: texts of several directions on one PLM are batched together; each row gets
  its direction's prompts and the PLM runs one forward per decoding step for the whole batch
  (``models/multi_prompt.py``). A text's translation does not depend on what it is batched
  with: the same as translating each direction on its own (tested to the string; batches
  differ only in padding, so scores agree up to float rounding). Directions
  with different beam settings, or on different PLMs, form separate batches.
* Empty (or blank) texts translate to ``""``. A text beyond a direction's positions is refused
  with ``FairseqPLMError`` naming the text and the limit, before anything runs.

A ``Translator`` is not thread-safe by itself: ``translate`` holds a lock, so concurrent calls
run one after the other (``fairseq-plm-serve`` batches them instead).
"""

import os
import threading
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import torch

from .plm.errors import FairseqPLMError

class TextError(FairseqPLMError):
    """A text that cannot be translated: ``index`` in the input, ``reason`` why."""

    def __init__(self, index, reason):
        super().__init__(f"text {index} {reason}")
        self.index, self.reason = index, reason


PROMPT_GPT_MODELS = ("msp", "prefix_tuning", "prompt_tuning")
PROMPT_NAT_MODELS = ("sga",)


@dataclass
class Direction:
    """One prompt set on its PLM, with its generation settings."""

    name: str
    checkpoint: str
    model: torch.nn.Module
    kind: str                  # "gpt" (beam search) or "nat" (iterative refinement)
    plm_path: str
    dictionary: object
    max_source_tokens: int     # source pieces incl. </s> the model can read
    beam: int = 4
    lenpen: float = 1.0
    max_len_a: float = 0.0
    max_len_b: int = 200
    iter_decode_max_iter: int = 10
    remove_diacritics: bool = False
    zh_punct: bool = False
    encode: object = field(default=None, repr=False)      # str -> list of pieces
    detokenize: object = field(default=None, repr=False)  # ids -> str

    def group_key(self):
        search = (self.beam, float(self.lenpen)) if self.kind == "gpt" else ()
        return (self.kind, id(self.model.plm)) + search


class Translator:
    """Prompt checkpoints on frozen PLMs as named translation directions; see the module
    docstring. ``plm``: the PLM directory every checkpoint should use (default: the one each
    checkpoint remembers). ``device``: "cpu", "cuda", ... (default: cuda if available).
    ``fp16``: half precision (GPU). ``batch_size``: most texts per generation batch."""

    def __init__(self, plm: Optional[str] = None, device: Optional[str] = None, fp16: bool = False,
                 batch_size: int = 32):
        import fairseq_plm  # noqa: F401  (registers the models and tasks, applies compat)

        self.plm = os.path.abspath(plm) if plm is not None and os.path.isdir(plm) else plm
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.fp16 = fp16
        self.batch_size = batch_size
        self._directions: Dict[str, Direction] = {}
        self._groups = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ directions

    @property
    def directions(self) -> List[str]:
        return list(self._directions)

    def direction(self, name: str) -> Direction:
        if name not in self._directions:
            known = ", ".join(self._directions) or "none"
            raise FairseqPLMError(f"unknown direction {name!r} (known: {known})")
        return self._directions[name]

    def add_direction(self, name: str, checkpoint: str, *, beam: int = 4, lenpen: float = 1.0,
                      max_len_a: float = 0.0, max_len_b: int = 200, iter_decode_max_iter: int = 10,
                      remove_diacritics: bool = False, zh_punct: bool = False, plm: Optional[str] = None,
                      model_overrides: Optional[dict] = None) -> Direction:
        """Load a prompt checkpoint (or anything fairseq's ``load_checkpoint_to_cpu`` reads)
        as direction ``name``. ``beam``/``lenpen``/``max_len_a``/``max_len_b`` are fairseq's
        beam-search settings (MSP family), ``iter_decode_max_iter`` SGA's denoising loops;
        ``plm`` overrides the Translator's (and the checkpoint's) PLM directory;
        ``model_overrides`` as fairseq's ``--model-overrides``."""
        if not name or any(c.isspace() for c in name) or "<" in name or ">" in name:
            raise FairseqPLMError(f"direction name {name!r}: use a non-empty name without spaces or <>")
        if name in self._directions:
            raise FairseqPLMError(f"direction {name!r} is already loaded")
        if beam < 1 or iter_decode_max_iter < 0:
            raise FairseqPLMError(f"direction {name!r}: beam must be >= 1 and iter_decode_max_iter >= 0")
        with self._lock:
            model, task, plm_path = self._load(checkpoint, model_overrides, plm)
            model_name = _model_name(model)
            if model_name in PROMPT_GPT_MODELS:
                kind = "gpt"
                limit = model.encoder.max_positions()
                if model.sequence_limit is not None:  # target after the source: room for </s> and one token
                    limit = min(limit, model.sequence_limit - 2)
            elif model_name in PROMPT_NAT_MODELS:
                kind = "nat"
                limit = model.max_positions()[0]
            else:
                raise FairseqPLMError(
                    f"{checkpoint}: a {model_name!r} model; the Translator serves prompt checkpoints on a frozen "
                    f"PLM ({', '.join(PROMPT_GPT_MODELS + PROMPT_NAT_MODELS)}); decode others with fairseq-plm-generate")
            model.eval()
            if self.fp16:
                model.half()
            model.to(self.device)
            encode, detok = _text_codec(plm_path, task.target_dictionary)
            d = Direction(name=name, checkpoint=checkpoint, model=model, kind=kind, plm_path=plm_path,
                          dictionary=task.target_dictionary, max_source_tokens=int(limit), beam=beam,
                          lenpen=lenpen, max_len_a=max_len_a, max_len_b=max_len_b,
                          iter_decode_max_iter=iter_decode_max_iter, remove_diacritics=remove_diacritics,
                          zh_punct=zh_punct, encode=encode, detokenize=detok)
            self._directions[name] = d
            self._groups = {}  # rebuilt on the next translate
            return d

    def _load(self, checkpoint, model_overrides, plm=None):
        from fairseq import checkpoint_utils

        from .tasks.plm_translation import PLMTranslationTask

        overrides = dict(model_overrides or {})
        plm = plm if plm is not None else self.plm
        if plm is not None:
            overrides["plm"] = os.path.abspath(plm) if os.path.isdir(plm) else plm
        try:
            state = checkpoint_utils.load_checkpoint_to_cpu(checkpoint, arg_overrides=overrides or None)
        except FileNotFoundError:
            raise FairseqPLMError(f"checkpoint not found: {checkpoint}") from None
        cfg = state.get("cfg")
        if cfg is None or cfg.get("model") is None:
            raise FairseqPLMError(f"{checkpoint} holds no fairseq model configuration")
        if cfg.task.get("_name") != "plm_translation":
            raise FairseqPLMError(f"{checkpoint} was trained with --task {cfg.task.get('_name')}; the Translator "
                                  f"serves plm_translation checkpoints")
        plm_path = cfg.model.get("plm")
        dictionary = _dictionary(plm_path, checkpoint)
        task = PLMTranslationTask(cfg.task, dictionary, dictionary)
        model = task.build_model(cfg.model)
        model.load_state_dict(state["model"], strict=True, model_cfg=cfg.model)
        return model, task, cfg.model.plm

    # ------------------------------------------------------------------ text

    def encode(self, texts: Sequence[str], directions: Union[str, Sequence[str]]) -> List[Optional[torch.Tensor]]:
        """Source ids (with </s>) for each text, None for a blank one. Raises
        ``FairseqPLMError`` naming the first text that cannot be translated."""
        dirs = self._direction_list(texts, directions)
        out = []
        for i, (text, name) in enumerate(zip(texts, dirs)):
            d = self.direction(name)
            if not isinstance(text, str):
                raise TextError(i, f"is a {type(text).__name__}, not a string")
            if not text.strip():
                out.append(None)
                continue
            if d.remove_diacritics:
                from .data.text_processing import remove_romanian_diacritics

                text = remove_romanian_diacritics(text)
            ids = d.dictionary.encode_line(" ".join(d.encode(text.strip())), add_if_not_exist=False,
                                           append_eos=True).long()
            if ids.numel() > d.max_source_tokens:
                raise TextError(i, f"is {ids.numel() - 1} tokens long; direction {name!r} reads at most "
                                   f"{d.max_source_tokens - 1} (the PLM's positions)")
            out.append(ids)
        return out

    def _direction_list(self, texts, directions):
        if isinstance(directions, str):
            return [directions] * len(texts)
        directions = list(directions)
        if len(directions) != len(texts):
            raise FairseqPLMError(f"{len(texts)} texts but {len(directions)} directions")
        return directions

    # ------------------------------------------------------------------ translate

    def translate(self, texts: Union[str, Sequence[str]], directions: Union[str, Sequence[str]]):
        """Translate ``texts`` (a string or a list) in ``directions`` (one name for all, or one
        per text). Returns a string or a list of strings, in input order."""
        if isinstance(texts, str):
            return self.translate([texts], directions)[0]
        texts = list(texts)
        dirs = self._direction_list(texts, directions)
        with self._lock:
            ids = self.encode(texts, dirs)
            out = [""] * len(texts)
            pending = {}
            for i, (t, name) in enumerate(zip(ids, dirs)):
                if t is not None:
                    pending.setdefault(self._directions[name].group_key(), []).append(i)
            for key, rows in pending.items():
                rows.sort(key=lambda i: ids[i].numel())  # less padding; results do not depend on it
                for start in range(0, len(rows), self.batch_size):
                    batch = rows[start:start + self.batch_size]
                    hyps = self._generate(key, [ids[i] for i in batch], [dirs[i] for i in batch])
                    for i, h in zip(batch, hyps):
                        out[i] = self._detokenize(self._directions[dirs[i]], h)
            return out

    def _detokenize(self, d, tokens):
        text = d.detokenize(tokens)
        if d.zh_punct:
            from .data.text_processing import restore_chinese_punctuation

            text = restore_chinese_punctuation(text)
        return text

    def _group(self, key):
        if key not in self._groups:
            names = [n for n, d in self._directions.items() if d.group_key() == key]
            ds = [self._directions[n] for n in names]
            models = [d.model for d in ds]
            tgt_dict = ds[0].dictionary
            if key[0] == "gpt":
                from fairseq.sequence_generator import SequenceGenerator

                from .models.multi_prompt import MultiPromptGPT

                wrapper = MultiPromptGPT(models, [(d.max_len_a, d.max_len_b) for d in ds])
                positions = wrapper.decoder.max_positions()
                # per-row limits live in the wrapper; the generator's own cap is the PLM's
                generator = SequenceGenerator([wrapper], tgt_dict, beam_size=ds[0].beam, max_len_a=0,
                                              max_len_b=positions, len_penalty=ds[0].lenpen)
            else:
                from fairseq.iterative_refinement_generator import IterativeRefinementGenerator

                from .models.multi_prompt import MultiPromptSGA

                wrapper = MultiPromptSGA(models, [d.iter_decode_max_iter for d in ds])
                generator = IterativeRefinementGenerator(tgt_dict, models=[wrapper], eos_penalty=0.0,
                                                         max_iter=max(d.iter_decode_max_iter for d in ds),
                                                         beam_size=1, adaptive=True, retain_history=False)
            self._groups[key] = (names, wrapper, generator)
        return self._groups[key]

    @torch.no_grad()
    def _generate(self, key, ids, names):
        from fairseq.data import data_utils

        group_names, wrapper, generator = self._group(key)
        d0 = self._directions[names[0]]
        pad = d0.dictionary.pad()
        src = data_utils.collate_tokens(ids, pad, left_pad=False).to(self.device)
        lengths = torch.tensor([t.numel() for t in ids], device=self.device)
        directions = torch.tensor([group_names.index(n) for n in names], device=self.device)
        if key[0] == "gpt":
            sample = {"net_input": {"src_tokens": src, "src_lengths": lengths, "directions": directions}}
            hypos = generator.generate([wrapper], sample)
        else:
            wrapper.directions = directions
            try:
                hypos = generator.generate([wrapper], {"net_input": {"src_tokens": src, "src_lengths": lengths}})
            finally:
                wrapper.directions = None
        return [h[0]["tokens"].cpu() for h in hypos]


def _model_name(model):
    from fairseq.models import MODEL_REGISTRY

    for name, cls in MODEL_REGISTRY.items():
        if type(model) is cls:
            return name
    return type(model).__name__


def _dictionary(plm_path, checkpoint):
    """The PLM's dictionary (ids == the PLM's token ids) from its tokenizer file."""
    from .plm.vocab import load_dictionary, tokenizer_file

    if not plm_path or tokenizer_file(plm_path) is None:
        raise FairseqPLMError(
            f"{checkpoint}: the PLM {plm_path} has no tokenizer file (spiece.model, sentencepiece.bpe.model or "
            f"vocab.txt); the Translator reads raw text with the PLM's own tokenizer")
    return load_dictionary(plm_path)


def _text_codec(plm_path, dictionary):
    """(str -> pieces, ids -> str) with the PLM's own tokenizer, as fairseq-interactive with
    ``--bpe sentencepiece`` (or ``--bpe wordpiece``) reads and writes text."""
    from .plm.vocab import WordPieceTokenizer, make_encoder, tokenizer_file

    encode = make_encoder(plm_path)
    if (tokenizer_file(plm_path) or "").endswith("vocab.txt"):
        def detokenize(tokens):
            return WordPieceTokenizer.detokenize(dictionary.string(tokens))
    else:
        def detokenize(tokens):
            return dictionary.string(tokens, "sentencepiece")
    return encode, detokenize

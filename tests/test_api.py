"""One frozen PLM, many prompt sets: shared PLM instances, the Python API (mixed-direction
batches equal each direction alone and the method's own generator), fairseq's hub interface,
and fairseq-plm-interactive with a direction per line."""

import os
import re
import subprocess
import sys

import pytest
import torch

from fairseq_plm import Translator
from fairseq_plm.api import TextError
from fairseq_plm.plm import shared
from fairseq_plm.plm.errors import FairseqPLMError

BIN = os.path.dirname(sys.executable)
GPT = {"single": {}, "msp": {}, "prefix": {}, "ptune": {}}
# one checkpoint may serve several directions with other inference settings: SGA's upsampling
# ratio, Mask-Predict iterations and denoising loops differ per row in a mixed batch
NAT = {"sga": ("sga", {"iter_decode_max_iter": 3}, None),
       "sga-r3": ("sga", {"iter_decode_max_iter": 1}, {"upsample_ratio": 3}),
       "sga-mp": ("sga_mp", {"iter_decode_max_iter": 2}, None),
       "sga-mp2": ("sga_mp", {"iter_decode_max_iter": 0}, {"mask_predict_iterations": 2})}
BEAM = {"beam": 2, "max_len_b": 10}


def sentences(prompt_sets, n=13):
    with open(os.path.join(prompt_sets["raw"], "test.en"), encoding="utf-8") as f:
        return [line.strip() for line in f][:n]


@pytest.fixture(scope="module")
def translator(prompt_sets):
    t = Translator(device="cpu", batch_size=64)
    for name in GPT:
        t.add_direction(name, prompt_sets["ckpts"][name], **BEAM)
    for name, (ckpt, settings, overrides) in NAT.items():
        t.add_direction(name, prompt_sets["ckpts"][ckpt], model_overrides=overrides, **settings)
    return t


# ------------------------------------------------------------------ shared PLM instances

def storages(module):
    """Where the module's tensors live (parameters and buffers, the PLM's included)."""
    return {t.untyped_storage().data_ptr() for t in [*module.parameters(), *module.buffers()]}


def test_directions_share_one_frozen_plm(translator):
    gpt = [translator.direction(n).model for n in GPT]
    nat = [translator.direction(n).model for n in NAT]
    assert all(m.plm is gpt[0].plm for m in gpt) and all(m.plm is nat[0].plm for m in nat)
    assert gpt[0].plm is not nat[0].plm
    # memory: one PLM + each direction's prompts (distinct tensor storages across all models)
    plm = storages(gpt[0].plm)
    everything = set().union(*(storages(m) for m in gpt))
    prompts = sum(len(storages(m) - plm) for m in gpt)
    assert len(everything) == len(plm) + prompts
    alive = [p for p in shared.live_instances() if p is gpt[0].plm or p is nat[0].plm]
    assert len(alive) == 2


def test_ensemble_shares_the_plm_and_sharing_can_be_turned_off(prompt_sets):
    from fairseq import checkpoint_utils

    paths = [prompt_sets["ckpts"]["single"], prompt_sets["ckpts"]["msp"]]
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task(paths)  # --path a.pt:b.pt
    assert models[0].plm is models[1].plm
    assert not any(p.requires_grad for p in models[0].plm.parameters())
    with shared.sharing(False):
        alone, _, _ = checkpoint_utils.load_model_ensemble_and_task(paths[:1])
    assert alone[0].plm is not models[0].plm
    assert not storages(alone[0].plm) & storages(models[0].plm)


def test_only_untouched_frozen_plms_are_shared(prompt_sets, tmp_path):
    import shutil
    from argparse import Namespace

    from fairseq_plm.plm.frozen import build_frozen_plm, build_plm
    from tiny import make_tiny_gpt

    own = str(tmp_path / "plm")  # a PLM no other test holds: this test modifies it
    make_tiny_gpt(own, os.path.join(prompt_sets["gpt_plm"], "spiece.model"), seed=77)

    def cfg(path=own, plm_dropout=False):
        return Namespace(plm=path, plm_random_init=False, plm_seed=1, plm_dropout=plm_dropout)

    a = build_frozen_plm(cfg())
    assert build_frozen_plm(cfg()) is a
    copy = shutil.copytree(own, str(tmp_path / "copy"))
    assert build_frozen_plm(cfg(copy)) is a                         # same weights elsewhere: the fingerprint tells
    assert build_plm(cfg()) is not a                               # a trainable PLM is always its own
    assert build_frozen_plm(cfg(plm_dropout=True)) is not a         # dropout on: train/eval mode differs
    with torch.no_grad():
        a.wte.weight[0, 0] += 1.0                                   # someone modified it in place
    b = build_frozen_plm(cfg())
    assert b is not a and not torch.equal(a.wte.weight, b.wte.weight)
    assert build_frozen_plm(cfg()) is b


# ------------------------------------------------------------------ the API

def test_mixed_batches_equal_each_direction_alone(translator, prompt_sets):
    src = sentences(prompt_sets)
    names = list(GPT) + list(NAT)
    alone = {}
    translator.batch_size = 4  # each direction alone, in batches of 4
    for n in names:
        alone[n] = translator.translate(src, n)
    translator.batch_size = 64
    texts = [s for s in src for _ in names]
    dirs = [n for _ in src for n in names]
    mixed = translator.translate(texts, dirs)  # one batch per PLM, every direction in it
    assert mixed == [alone[d][src.index(t)] for t, d in zip(texts, dirs)]
    assert len({tuple(v) for v in alone.values()}) == len(names)  # directions differ
    assert all(any(v) for v in alone.values())


def test_api_equals_the_method_own_generator(translator, prompt_sets):
    """Beam search over the plain model (fairseq's SequenceGenerator / the task's position-capped
    one) and fairseq's IterativeRefinementGenerator over the plain SGA model."""
    from fairseq.data import data_utils
    from fairseq.iterative_refinement_generator import IterativeRefinementGenerator
    from fairseq.sequence_generator import SequenceGenerator

    from fairseq_plm.tasks.plm_translation import PositionCappedGenerator

    src = sentences(prompt_sets)
    for name in list(GPT) + list(NAT):
        d = translator.direction(name)
        if d.kind == "gpt":
            limit = d.model.sequence_limit
            gen = (PositionCappedGenerator([d.model], d.dictionary, sequence_limit=limit, **_beam(BEAM))
                   if limit else SequenceGenerator([d.model], d.dictionary, **_beam(BEAM)))
        else:
            gen = IterativeRefinementGenerator(d.dictionary, models=[d.model], max_iter=d.iter_decode_max_iter)
        ids = translator.encode(src, name)
        sample = {"net_input": {"src_tokens": data_utils.collate_tokens(ids, d.dictionary.pad()),
                                "src_lengths": torch.tensor([len(i) for i in ids])}}
        with torch.no_grad():
            own = [d.detokenize(h[0]["tokens"]) for h in gen.generate([d.model], sample)]
        assert translator.translate(src, name) == own, name


def _beam(settings):
    return {"beam_size": settings["beam"], "max_len_b": settings["max_len_b"]}


def test_decoding_runs_one_plm_forward_per_step_for_the_whole_batch(translator, prompt_sets):
    from fairseq_plm.models import multi_prompt

    src = sentences(prompt_sets, 5)
    calls = []
    forward = multi_prompt.MultiPromptGPTDecoder.forward

    def counting(self, prev_output_tokens, *a, **kw):
        calls.append(prev_output_tokens.size(0))
        return forward(self, prev_output_tokens, *a, **kw)

    multi_prompt.MultiPromptGPTDecoder.forward = counting
    try:
        steps = {}
        for n in GPT:
            calls.clear()
            translator.translate(src, n)
            steps[n] = len(calls)
        calls.clear()
        translator.translate(src * len(GPT), [n for n in GPT for _ in src])
    finally:
        multi_prompt.MultiPromptGPTDecoder.forward = forward
    assert len(calls) == max(steps.values())  # not their sum
    assert calls[0] == len(src) * len(GPT) * BEAM["beam"]


def test_mixed_decoding_reads_one_batch_shared_prompt_table(translator, prompt_sets):
    """The cost of mixing directions: decoding steps read the directions' prompts as one
    [1, H, K*L, D] segment with each row masked to its own direction, never a per-row copy."""
    from fairseq_plm.models import multi_prompt

    src = sentences(prompt_sets, 3)
    names = ["msp", "prefix", "ptune"]
    seen, masks = [], []
    forward = multi_prompt.MultiPromptGPTDecoder.forward

    def recording(self, prev_output_tokens, encoder_out=None, *a, **kw):
        seen.append((prev_output_tokens.size(0), [k.shape for k in encoder_out["prompt_keys"]],
                     encoder_out["prefix_padding_mask"][0].shape, encoder_out["src_keys"][0].size(2)))
        masks.append(encoder_out["prefix_padding_mask"][0])
        return forward(self, prev_output_tokens, encoder_out, *a, **kw)

    multi_prompt.MultiPromptGPTDecoder.forward = recording
    try:
        translator.translate(src * len(names), [n for n in names for _ in src])
    finally:
        multi_prompt.MultiPromptGPTDecoder.forward = forward
    rows, shapes, (mask_rows, mask_width), src_width = seen[0]
    assert rows == mask_rows == len(src) * len(names) * BEAM["beam"]
    table_width = shapes[0][2]
    assert all(s[0] == 1 and s[2] == table_width for s in shapes)
    assert mask_width == table_width + src_width  # each row's mask covers [flat table; source]
    assert all(s == shapes for _, s, _, _ in seen)
    # each row sees only its own direction's block of the table: blocks of width L = width / K
    width = table_width // len(names)
    assert width * len(names) == table_width
    visible = ~masks[0][:, :table_width]
    blocks = set()
    for row in visible:
        pos = row.nonzero().squeeze(1)
        if pos.numel():  # prompt tuning has no deep prompt: its rows see no table position
            assert int(pos.min()) // width == int(pos.max()) // width
            blocks.add(int(pos.min()) // width)
    assert len(blocks) == 2  # MSP's and prefix tuning's


def test_flat_table_mask_shows_each_row_its_own_prompt():
    from fairseq_plm.models.multi_prompt import _flat_table_mask

    padding = torch.tensor([[False, False, True], [False, False, False]])  # direction 0 has 2 positions
    mask = _flat_table_mask(padding, torch.tensor([1, 0, 1]))
    assert mask.tolist() == [[True, True, True, False, False, False],
                             [False, False, True, True, True, True],
                             [True, True, True, False, False, False]]


def test_position_limit_is_per_row(prompt_sets):
    """Prompt tuning puts prompt, source and target in one position range, so a long source
    leaves few target positions. Each row stops at its own limit (fairseq's position-capped
    beam search caps a whole batch by its longest source): the long text decodes exactly as
    alone, and a short text batched with it is not cut short."""

    from fairseq_plm.tasks.plm_translation import PositionCappedGenerator

    t = Translator(device="cpu")
    d = t.add_direction("ptune", prompt_sets["ckpts"]["ptune"], beam=2, max_len_b=200)
    words = "Open the file and save all changes".split()
    text = " ".join(words)
    while len(d.encode(text + " " + words[len(text.split()) % len(words)])) + 1 <= d.max_source_tokens:
        text += " " + words[len(text.split()) % len(words)]
    ids = t.encode([text], "ptune")[0]
    room = d.model.sequence_limit - ids.numel()  # target positions left after prompt and source
    assert 2 <= room <= 10
    gen = PositionCappedGenerator([d.model], d.dictionary, beam_size=2, max_len_b=200,
                                  sequence_limit=d.model.sequence_limit)
    sample = {"net_input": {"src_tokens": ids[None], "src_lengths": torch.tensor([ids.numel()])}}
    with torch.no_grad():
        own = gen.generate([d.model], sample)[0][0]["tokens"]
    assert len(own) <= room
    short = "Save all"
    assert t.translate([text, short], "ptune") == [d.detokenize(own), t.translate(short, "ptune")]
    # max_len_a * |x| + max_len_b is per row too (fairseq uses the batch's longest source)
    t.add_direction("ptune-a", prompt_sets["ckpts"]["ptune"], beam=2, max_len_a=0.5, max_len_b=1)
    texts = ["Save all", "Open the file and save all changes before you close the window"]
    assert t.translate(texts, "ptune-a") == [t.translate(x, "ptune-a") for x in texts]
    assert len(t.translate(texts[0], "ptune-a").split()) < len(t.translate(texts[1], "ptune-a").split())


def test_blank_long_and_unknown_inputs(translator, prompt_sets):
    assert translator.translate(["", "  "], "msp") == ["", ""]
    with pytest.raises(TextError, match=r"text 1 is \d+ tokens long; direction 'sga' reads at most \d+"):
        translator.translate(["fine", "word " * 400], "sga")
    with pytest.raises(FairseqPLMError, match=r"unknown direction 'fr' \(known: single, msp"):
        translator.translate(["Save all"], "fr")
    with pytest.raises(FairseqPLMError, match="already loaded"):
        translator.add_direction("msp", prompt_sets["ckpts"]["msp"])


def test_plm_override_and_a_checkpoint_of_another_plm(prompt_sets, tmp_path):
    from tiny import make_tiny_gpt

    t = Translator(plm=prompt_sets["gpt_plm"], device="cpu")
    t.add_direction("de", prompt_sets["ckpts"]["msp"], **BEAM)
    assert t.translate("Save all", "de")
    with pytest.raises(FairseqPLMError, match="sga needs a bidirectional encoder"):
        t.add_direction("x", prompt_sets["ckpts"]["sga"])
    other = str(tmp_path / "other")
    make_tiny_gpt(other, os.path.join(prompt_sets["gpt_plm"], "spiece.model"), seed=123)
    with pytest.raises(FairseqPLMError, match="fingerprint"):
        Translator(plm=other, device="cpu").add_direction("de", prompt_sets["ckpts"]["msp"])
    with pytest.raises(FairseqPLMError, match="checkpoint not found"):
        t.add_direction("y", "/nonexistent/checkpoint.pt")


def test_fairseq_hub_interface_still_works_and_shares_the_plm(translator, prompt_sets):
    from fairseq_plm.models.msp import MSPModel

    ckpt = prompt_sets["ckpts"]["msp"]
    hubs = [MSPModel.from_pretrained(os.path.dirname(ckpt), checkpoint_file=os.path.basename(ckpt),
                                     data_name_or_path=prompt_sets["data"], bpe="sentencepiece",
                                     sentencepiece_model=os.path.join(prompt_sets["gpt_plm"], "spiece.model"))
            for _ in range(2)]
    assert hubs[0].models[0].plm is hubs[1].models[0].plm is translator.direction("msp").model.plm
    src = sentences(prompt_sets, 4)
    assert hubs[0].translate(src, beam=2, max_len_b=10) == translator.translate(src, "msp")


# ------------------------------------------------------------------ fairseq-plm-interactive

def test_interactive_chooses_the_direction_per_line(translator, prompt_sets):
    c = prompt_sets["ckpts"]
    lines = ["<2msp> Open the file", "<2sga> Save all", "Open the file", "", "<2fr> Bonjour",
             "<2sga> " + "word " * 400, "<2ptune> Save all"]
    data = ("\n".join(lines) + "\n").encode() + b"<2msp> caf\xe9\n"  # not UTF-8
    p = subprocess.run([os.path.join(BIN, "fairseq-plm-interactive"), "--cpu", "--beam", "2", "--max-len-b", "10",
                        "--direction", f"msp={c['msp']}", "--direction", f"ptune={c['ptune']}",
                        "--direction", f"sga={c['sga']},iter_decode_max_iter=3", "--default-direction", "msp",
                        "--buffer-size", "3"], input=data, capture_output=True)
    out = p.stdout.decode().split("\n")
    assert out[-1] == "" and len(out) - 1 == len(lines) + 1  # one output line per input line
    expected = [translator.translate("Open the file", "msp"), translator.translate("Save all", "sga"),
                translator.translate("Open the file", "msp"), "", "", "",
                translator.translate("Save all", "ptune"), translator.translate("caf\ufffd", "msp")]
    assert out[:-1] == expected
    err = p.stderr.decode()
    assert p.returncode == 1
    assert "line 5: unknown direction 'fr' (known: msp, ptune, sga)" in err
    assert re.search(r"line 6: the text is \d+ tokens long; direction 'sga' reads at most \d+", err)
    assert "2 of 8 lines could not be translated" in err


def test_direction_specs():
    from fairseq_plm.cli.translate import parse_direction, split_tag

    assert parse_direction("en-zh=ckpt2.pt,lenpen=1.0,zh_punct=true,beam=5", {"beam": 4}) == \
        ("en-zh", "ckpt2.pt", {"beam": 5, "lenpen": 1.0, "zh_punct": True})
    assert parse_direction("ro-en=/a/b.pt,remove_diacritics=yes,plm=/p", {}) == \
        ("ro-en", "/a/b.pt", {"remove_diacritics": True, "plm": "/p"})
    with pytest.raises(FairseqPLMError, match="unknown setting 'bem=5'"):
        parse_direction("de=c.pt,bem=5", {})
    with pytest.raises(FairseqPLMError, match="beam='x' is not a valid value"):
        parse_direction("de=c.pt,beam=x", {})
    with pytest.raises(FairseqPLMError, match="expected NAME=CHECKPOINT"):
        parse_direction("c.pt", {})
    assert split_tag("<2de> Open the file", "en") == ("de", "Open the file")
    assert split_tag("Open <2de> the file", "en") == ("en", "Open <2de> the file")

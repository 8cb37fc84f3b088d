"""Bad input never loses data and always gets a one-line answer (issue 13; tests/README.md lists
every case and what it gets). Commands are run in-process where that is enough (fast), as real
subprocesses where the behaviour lives in the console script (interactive, generate)."""

import json
import os
import re
import subprocess
import sys
import tomllib

import fairseq_cli.preprocess  # noqa: F401  (imported here, not under capsys: they set up logging on
import fairseq_cli.train  # noqa: F401       sys.stdout, which must outlive a test's capture)
import fairseq_cli.validate  # noqa: F401
import pytest
import torch

from fairseq_plm.cli import encode, fairseq_commands, mpt_eval, score
from fairseq_plm.plm import errors
from fairseq_plm.plm.errors import FairseqPLMError
from tiny import BIN, REPO, USER_DIR, cli

GEN = ["--task", "plm_translation", "--beam", "2", "--max-len-a", "0", "--max-len-b", "8", "--cpu"]


def one_line_error(capsys_or_text, command):
    """The command's error, asserted to be one line and no traceback."""
    text = capsys_or_text if isinstance(capsys_or_text, str) else capsys_or_text.readouterr().err
    assert "Traceback" not in text, text[-3000:]
    last = text.strip().splitlines()[-1]
    assert last.startswith(f"{command}: error: "), text[-3000:]
    return last


def run_main(main, argv, capsys, monkeypatch=None):
    """Run a command's main in-process: (exit status or message, stderr); stdout in run_main.out.
    Commands reading sys.argv (fairseq's) get it through ``monkeypatch``."""
    with pytest.raises(SystemExit) as e:
        if monkeypatch is not None:
            monkeypatch.setattr(sys, "argv", [getattr(main, "command_name", "fairseq-plm-x"), *map(str, argv)])
            main()
        else:
            main(list(map(str, argv)))
        raise SystemExit(0)
    captured = capsys.readouterr()
    run_main.out = captured.out
    code = e.value.code
    err = captured.err + (code + "\n" if isinstance(code, str) else "")  # sys.exit(message) prints it
    return code, err


# ------------------------------------------------------------------ the error boundary

def test_every_command_runs_inside_the_error_boundary():
    """Every console script of the package (pyproject) is wrapped by errors.command, so any
    future fairseq-plm-* command that forgets it fails here."""
    import importlib

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert len(scripts) >= 10
    for name, target in scripts.items():
        module, func = target.split(":")
        fn = getattr(importlib.import_module(module), func)
        assert getattr(fn, "command_name", None) == name, f"{name} ({target}) is not wrapped by errors.command"


def test_boundary_one_line_for_known_failures_traceback_for_unknown(capsys):
    @errors.command("fairseq-plm-x")
    def known():
        raise FairseqPLMError("bad --flag value\nsecond line")

    @errors.command("fairseq-plm-x")
    def unknown():
        raise KeyError("a bug")

    @errors.command("fairseq-plm-x")
    def missing():
        open("/nonexistent/file")

    with pytest.raises(SystemExit) as e:
        known()
    assert e.value.code == "fairseq-plm-x: error: bad --flag value second line"
    with pytest.raises(KeyError):
        unknown()
    with pytest.raises(SystemExit) as e:
        missing()
    assert "/nonexistent/file" in e.value.code


def test_boundary_maps_our_error_from_a_worker_process():
    """Data-parallel workers' errors reach the parent as ProcessRaisedException (text only)."""
    from torch.multiprocessing import ProcessRaisedException

    text = ("\n\n-- Process 1 terminated with the following error:\nTraceback (most recent call last):\n"
            "  File \"x.py\", line 1, in f\nfairseq_plm.plm.vocab.VocabularyError: data/dict.en.txt is truncated\n")
    assert errors.known_failure(ProcessRaisedException(text, 1, 123)) == "data/dict.en.txt is truncated"
    other = text.replace("fairseq_plm.plm.vocab.VocabularyError", "KeyError")
    assert errors.known_failure(ProcessRaisedException(other, 1, 123)) is None


def test_fairseq_argument_assertions_are_one_line(tiny, capsys, monkeypatch):
    code, err = run_main(fairseq_commands.validate, [tiny["data"], "--task", "plm_translation", "--path", "x.pt"],
                         capsys, monkeypatch)
    assert code != 0 and "--max-tokens or --batch-size" in one_line_error(err, "fairseq-plm-validate")


# ------------------------------------------------------------------ one way to split lines

def test_lines_split_as_fairseq_splits_them(tmp_path):
    """\\n, \\r\\n and a lone \\r end a line (Python's universal newlines, which
    fairseq-preprocess and fairseq-interactive read with); U+2028, U+2029, U+0085, \\x0b,
    \\x0c and \\x1c-\\x1e do not (str.splitlines would split there)."""
    from fairseq_plm.data.text_processing import count_lines, read_lines

    text = "a\u2028b\r\nc\x0cd\x0be\x1cf\x85g\u2029h\rlast\n\nend"
    f = tmp_path / "t.txt"
    f.write_bytes(text.encode("utf-8"))
    with open(f, encoding="utf-8") as fd:  # how fairseq reads text files
        fairseq_lines = [line.rstrip("\n") for line in fd]
    assert read_lines(str(f)) == fairseq_lines == ["a\u2028b", "c\x0cd\x0be\x1cf\x85g\u2029h", "last", "", "end"]
    assert count_lines(str(f)) == 5
    assert len(text.splitlines()) > 5  # what score used


def test_invalid_utf8_is_an_error_naming_file_and_line(tmp_path):
    from fairseq_plm.data.text_processing import LineReader, read_lines

    f = tmp_path / "t.txt"
    f.write_bytes(b"fine\nalso fine\nbad \xff\xfe byte\n")
    with pytest.raises(FairseqPLMError, match=r"t\.txt: line 3 is not valid UTF-8"):
        read_lines(str(f))
    with open(f, "rb") as fd:
        assert list(LineReader(fd, "x", errors="replace"))[2] == "bad \ufffd\ufffd byte"


# ------------------------------------------------------------------ fairseq-plm-encode

def test_encode_refuses_to_overwrite_its_input(tiny, tmp_path, capsys):
    f = tmp_path / "text.en"
    f.write_text("Open the file\nSave all\n")
    os.symlink(f, tmp_path / "link.en")
    for out in (f, tmp_path / "link.en", tmp_path / "." / "text.en"):
        code, err = run_main(encode.main, ["--tokenizer", tiny["plm"], "--inputs", f, "--outputs", out], capsys)
        assert code != 0 and "same file as --inputs" in one_line_error(err, "fairseq-plm-encode")
        assert f.read_text() == "Open the file\nSave all\n"
    # an output equal to another pair's input is refused too (it would be read after being replaced)
    g = tmp_path / "other.en"
    g.write_text("x\n")
    code, err = run_main(encode.main, ["--tokenizer", tiny["plm"], "--inputs", f, g, "--outputs", g,
                                       tmp_path / "o"], capsys)
    assert code != 0 and g.read_text() == "x\n"


def test_encode_invalid_utf8_names_the_line_and_keeps_the_old_output(tiny, tmp_path, capsys):
    src, dst = tmp_path / "in.en", tmp_path / "out.en"
    src.write_bytes(b"Open the file\nSave \xff all\n")
    dst.write_text("previous output\n")
    code, err = run_main(encode.main, ["--tokenizer", tiny["plm"], "--inputs", src, "--outputs", dst], capsys)
    assert code != 0 and "line 2 is not valid UTF-8" in one_line_error(err, "fairseq-plm-encode")
    assert dst.read_text() == "previous output\n"
    assert sorted(os.listdir(tmp_path)) == ["in.en", "out.en"]  # no temporary file left
    dst.unlink()
    run_main(encode.main, ["--tokenizer", tiny["plm"], "--inputs", src, "--outputs", dst], capsys)
    assert not dst.exists()  # a failed first run leaves no empty output behind


# ------------------------------------------------------------------ fairseq-plm-score

def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_score_refuses_line_counts_that_differ(tmp_path, capsys):
    hyp = write(tmp_path / "hyp", "a b c\nd e f\n")
    ref = write(tmp_path / "ref", "a b c\nd e f\ng h i\n")
    code, err = run_main(score.main, ["--hyp", hyp, "--ref", ref], capsys)
    line = one_line_error(err, "fairseq-plm-score")
    assert code != 0 and f"{hyp} has 2 lines" in line and f"{ref} has 3" in line
    gen = write(tmp_path / "gen.out", "S-0\tx\nT-0\ta b c\nD-0\t-1\ta b c\nS-1\ty\nT-1\td e f\nD-1\t-1\td e f\n")
    code, err = run_main(score.main, ["--generate-output", gen, "--ref", ref], capsys)  # more refs than output
    assert code != 0 and "has 3 lines" in one_line_error(err, "fairseq-plm-score")


def test_score_splits_references_only_where_fairseq_does(tmp_path, capsys):
    """A reference holding U+2028 or a form feed must stay one sentence (splitlines shifted them)."""
    gen = write(tmp_path / "gen.out", "T-0\tthe house\u2028is red\nD-0\t-1\tthe house\u2028is red\n"
                                      "T-1\tthe cat\x0cis black\nD-1\t-1\tthe cat\x0cis black\n"
                                      "T-2\tthe dog runs\nD-2\t-1\tthe dog runs\n")
    ref = write(tmp_path / "ref", "the house\u2028is red\nthe cat\x0cis black\nthe dog runs\n")
    code, _ = run_main(score.main, ["--generate-output", gen, "--ref", ref], capsys)
    assert code == 0 and run_main.out.startswith("BLEU = 100.00 (3 sentences)")


def test_score_refuses_empty_or_missing_files(tmp_path, capsys):
    ok = write(tmp_path / "ok", "a b\n")
    empty = write(tmp_path / "empty", "")
    for argv, expected in ((["--hyp", empty, "--ref", ok], "is empty"),
                           (["--hyp", ok, "--ref", tmp_path / "missing"], "file not found"),
                           (["--generate-output", tmp_path / "missing"], "file not found"),
                           (["--generate-output", empty], "no T- (reference) lines")):
        code, err = run_main(score.main, argv, capsys)
        assert code != 0 and expected in one_line_error(err, "fairseq-plm-score"), argv


def test_score_refuses_sentencepiece_pieces(tmp_path, capsys):
    gen = write(tmp_path / "gen.out", "T-0\t▁the ▁house ▁is ▁red\nD-0\t-1\t▁the ▁house ▁is ▁red\n")
    code, err = run_main(score.main, ["--generate-output", gen], capsys)
    assert code != 0 and "--bpe sentencepiece" in one_line_error(err, "fairseq-plm-score")
    code, err = run_main(score.main, ["--generate-output", gen, "--allow-pieces"], capsys)
    assert code == 0 and "WARNING" in err and run_main.out.startswith("BLEU = 100.00")


# ------------------------------------------------------------------ fairseq-plm-preprocess

def preprocess_args(tok_pref, plm, dest, *extra):
    return ["--task", "plm_translation", "-s", "en", "-t", "de", "--testpref", tok_pref, "--srcdict", plm,
            "--tgtdict", plm, "--destdir", dest, "--workers", "1", *extra]


def test_preprocess_refuses_line_counts_that_differ(tiny, tmp_path, capsys, monkeypatch):
    pref = tmp_path / "test"
    write(tmp_path / "test.en", "".join(open(os.path.join(tiny["tok"], "test.en")).readlines()[:-1]))
    write(tmp_path / "test.de", open(os.path.join(tiny["tok"], "test.de")).read())
    code, err = run_main(fairseq_commands.preprocess, preprocess_args(pref, tiny["plm"], tmp_path / "bin"),
                         capsys, monkeypatch)
    line = one_line_error(err, "fairseq-plm-preprocess")
    assert code != 0 and f"{pref}.en has 12 lines" in line and f"{pref}.de has 13" in line
    assert not (tmp_path / "bin").exists()


def test_preprocess_refuses_text_not_encoded_with_the_plm_tokenizer(tiny, tmp_path, capsys, monkeypatch):
    pref = os.path.join(tiny["raw"], "test")  # raw text: fairseq-plm-encode skipped
    code, err = run_main(fairseq_commands.preprocess, preprocess_args(pref, tiny["plm"], tmp_path / "bin"),
                         capsys, monkeypatch)
    line = one_line_error(err, "fairseq-plm-preprocess")
    assert code != 0 and "fairseq-plm-encode" in line and "<unk>" in line and f"{pref}.en" in line
    assert not (tmp_path / "bin").exists()


def test_preprocess_refuses_invalid_utf8_naming_file_and_line(tiny, tmp_path, capsys, monkeypatch):
    pref = tmp_path / "test"
    (tmp_path / "test.en").write_bytes(b"\xe2\x96\x81a\n\xff\n")
    write(tmp_path / "test.de", "x\ny\n")
    code, err = run_main(fairseq_commands.preprocess, preprocess_args(pref, tiny["plm"], tmp_path / "bin"),
                         capsys, monkeypatch)
    assert code != 0 and f"{pref}.en: line 2 is not valid UTF-8" in one_line_error(err, "fairseq-plm-preprocess")


def test_data_binarized_by_plain_fairseq_preprocess_is_checked_at_load(trained, tmp_path):
    """The README's own path, fairseq-preprocess --user-dir: raw text, and counts that differ,
    are refused when the data is loaded (one line, from the task)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    write(raw / "test.en", open(os.path.join(trained["raw"], "test.en")).read())
    write(raw / "test.de", open(os.path.join(trained["raw"], "test.de")).read())
    cli("fairseq-preprocess", "--user-dir", USER_DIR, *preprocess_args(raw / "test", trained["plm"], tmp_path / "bin"))
    tok = tmp_path / "tok"
    tok.mkdir()
    write(tok / "test.en", open(os.path.join(trained["tok"], "test.en")).read())
    write(tok / "test.de", "".join(open(os.path.join(trained["tok"], "test.de")).readlines()[:-2]))
    cli("fairseq-preprocess", "--user-dir", USER_DIR, *preprocess_args(tok / "test", trained["plm"], tmp_path / "bin2"))
    ckpt = os.path.join(trained["save"], "checkpoint_last.pt")
    p = cli("fairseq-plm-generate", tmp_path / "bin", "--path", ckpt, *GEN, check=False)
    assert p.returncode != 0 and "fairseq-plm-encode" in one_line_error(p.stderr, "fairseq-plm-generate")
    p = cli("fairseq-plm-generate", tmp_path / "bin2", "--path", ckpt, *GEN, check=False)
    line = one_line_error(p.stderr, "fairseq-plm-generate")
    assert p.returncode != 0 and "13 sentences" in line and "11 sentences" in line


# ------------------------------------------------------------------ interactive

def interactive(trained, data, *extra, env=None):
    exe = os.path.join(BIN, "fairseq-plm-interactive")
    return subprocess.run([exe, trained["data"], "--path", os.path.join(trained["save"], "checkpoint_last.pt"),
                           *GEN, *extra], input=data, capture_output=True, env=dict(os.environ, **(env or {})))


def hypotheses(stdout):
    return [int(i) for i in re.findall(rb"^H-(\d+)\t", stdout, flags=re.M)]


def test_interactive_translates_every_line_despite_invalid_utf8(trained, tmp_path):
    data = b"Open the file\nSave \xff\xfe all\nClose the window\n"
    bpe = ["--bpe", "sentencepiece", "--sentencepiece-model", os.path.join(trained["plm"], "spiece.model")]
    # standard input, under the locale's error handler and under strict UTF-8
    for env in ({}, {"PYTHONIOENCODING": "utf-8:strict"}):
        p = interactive(trained, data, *bpe, env=env)
        assert p.returncode == 0, p.stderr[-2000:]
        assert hypotheses(p.stdout) == [0, 1, 2]
        assert b"line 2 is not valid UTF-8" in p.stderr
    f = tmp_path / "input.txt"
    f.write_bytes(data)
    p = interactive(trained, b"", *bpe, "--input", str(f))
    assert p.returncode == 0 and hypotheses(p.stdout) == [0, 1, 2], p.stderr[-2000:]
    assert f"--input {f}: line 2 is not valid UTF-8".encode() in p.stderr


def test_interactive_without_bpe_warns_about_raw_text(trained):
    p = interactive(trained, b"Open the file\nSave all\n")
    assert p.returncode == 0 and hypotheses(p.stdout) == [0, 1]
    assert b"input line 1" in p.stderr and b"<unk>" in p.stderr and b"--bpe sentencepiece" in p.stderr


def test_too_long_input_names_the_input_line(trained):
    p = interactive(trained, b"Open\nOpen the file and save all of it now right away please and quickly\n",
                    "--bpe", "sentencepiece", "--sentencepiece-model", os.path.join(trained["plm"], "spiece.model"),
                    "--max-source-positions", "20")
    assert p.returncode != 0
    assert "line 2 of the input" in one_line_error(p.stderr.decode(), "fairseq-plm-interactive")
    p = cli("fairseq-plm-generate", trained["data"], "--path", os.path.join(trained["save"], "checkpoint_last.pt"),
            *GEN, "--batch-size", "4", "--max-source-positions", "20", check=False)
    line = one_line_error(p.stderr, "fairseq-plm-generate")
    sizes = [len(line.split()) + 1 for line in open(os.path.join(trained["tok"], "test.en"))]  # + </s>
    first = next(i for i, n in enumerate(sizes) if n > 20)
    assert f"line {first + 1} of the test split (sentence id {first})" in line


# ------------------------------------------------------------------ fp16 / bf16 on a CPU

@pytest.mark.parametrize("flag", ["--fp16", "--bf16"])
def test_half_precision_training_on_cpu_is_one_line(tiny, flag, capsys, monkeypatch):
    argv = [tiny["data"], "--plm", tiny["plm"], "--task", "plm_translation", "--arch", "msp_single_stage",
            "--max-tokens", "500", "--cpu", flag]
    code, err = run_main(fairseq_commands.train, argv, capsys, monkeypatch)
    assert code != 0 and "drop " + flag in one_line_error(err, "fairseq-plm-train")


def test_half_precision_training_with_plain_fairseq_train(tiny, tmp_path):
    p = cli("fairseq-train", tiny["data"], "--user-dir", USER_DIR, "--plm", tiny["plm"], "--task", "plm_translation",
            "--arch", "msp_single_stage", "--prompt-length", "4", "--max-tokens", "500", "--optimizer", "adam",
            "--lr", "0.01", "--cpu", "--fp16", "--save-dir", tmp_path, check=False)
    assert p.returncode != 0
    assert p.stderr.strip().splitlines()[-1].endswith("drop --fp16 to train in fp32")  # (fairseq's own traceback above)


# ------------------------------------------------------------------ plain fairseq without --user-dir

def test_plain_fairseq_generate_without_user_dir_says_what_to_add(trained):
    p = cli("fairseq-generate", trained["data"], "--path", os.path.join(trained["save"], "checkpoint_last.pt"),
            "--cpu", check=False)
    last = p.stderr.strip().splitlines()[-1]
    assert p.returncode != 0 and "--user-dir" in last and "fairseq-plm-generate" in last


# ------------------------------------------------------------------ the PLM fingerprint

def copy_plm_with_one_changed_row(src, dst, row=7, col=3):
    """A copy of a PLM with one value of one embedding row changed (one the old sampled
    fingerprint never looked at)."""
    from safetensors.torch import load_file, save_file
    import shutil

    shutil.copytree(src, dst)
    state = load_file(os.path.join(dst, "model.safetensors"))
    key = next(k for k in state if k.endswith("wte.weight"))
    state[key][row, col] += 1e-3
    save_file(state, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})


def test_fingerprint_is_exact(tiny, tmp_path, monkeypatch):
    from fairseq_plm.plm.frozen import fingerprint, sampled_fingerprint_v1
    from fairseq_plm.plm.loading import load_plm

    monkeypatch.setenv("FAIRSEQ_PLM_CACHE", "off")
    a = load_plm(tiny["plm"])
    b = load_plm(tiny["plm"])
    b.wte.weight.data[7, 3] += 1e-3  # one value of one row
    assert torch.equal(sampled_fingerprint_v1(a), sampled_fingerprint_v1(b))  # the old sample missed it
    assert not torch.equal(fingerprint(a), fingerprint(b))
    assert torch.equal(fingerprint(a), fingerprint(load_plm(tiny["plm"])))
    assert fingerprint(a)[0] == 2 and fingerprint(a).numel() == 33
    assert torch.equal(fingerprint(a.half()), fingerprint(load_plm(tiny["plm"]).half()))


def test_fingerprint_cache(tiny, tmp_path, monkeypatch):
    from fairseq_plm.plm import frozen
    from fairseq_plm.plm.loading import load_plm

    monkeypatch.setenv("FAIRSEQ_PLM_CACHE", str(tmp_path / "cache"))
    plm_dir = str(tmp_path / "plm")
    import shutil

    shutil.copytree(tiny["plm"], plm_dir)
    model = load_plm(plm_dir)
    first = frozen.fingerprint(model, source=plm_dir)
    assert json.load(open(tmp_path / "cache" / "plm_fingerprints.json"))
    real = frozen._exact_digest
    monkeypatch.setattr(frozen, "_exact_digest", lambda m: pytest.fail("hashed again despite the cache"))
    assert torch.equal(frozen.fingerprint(model, source=plm_dir), first)
    # a changed file (even of the same size) is hashed again
    monkeypatch.setattr(frozen, "_exact_digest", real)
    copy_plm_with_one_changed_row(tiny["plm"], str(tmp_path / "changed"))
    shutil.copy(str(tmp_path / "changed" / "model.safetensors"), os.path.join(plm_dir, "model.safetensors"))
    assert not torch.equal(frozen.fingerprint(load_plm(plm_dir), source=plm_dir), first)
    # a cache that cannot be written (here: under a file, which even root cannot write into) is skipped
    write(tmp_path / "a-file", "")
    monkeypatch.setenv("FAIRSEQ_PLM_CACHE", str(tmp_path / "a-file" / "cache"))
    assert torch.equal(frozen.fingerprint(model, source=plm_dir), first)


def test_plm_with_one_changed_embedding_row_is_refused(trained, tmp_path):
    """And the advice in the error works: --model-overrides with the training PLM."""
    other = str(tmp_path / "plm-one-row-changed")
    copy_plm_with_one_changed_row(trained["plm"], other)
    ckpt = os.path.join(trained["save"], "checkpoint_last.pt")
    p = cli("fairseq-plm-generate", trained["data"], "--path", ckpt, *GEN, "--model-overrides",
            repr({"plm": other}), check=False)
    line = one_line_error(p.stderr, "fairseq-plm-generate")
    assert p.returncode != 0 and "fingerprint" in line and "--model-overrides" in line
    assert "--plm (" not in line and "point --plm" not in line  # fairseq-plm-generate rejects --plm
    p = cli("fairseq-plm-generate", trained["data"], "--path", ckpt, *GEN, "--model-overrides",
            repr({"plm": trained["plm"]}))
    assert len(re.findall(r"^H-\d+\t", p.stdout, flags=re.M)) == 13


def test_resuming_against_another_plm_is_one_line(trained, tmp_path):
    """fairseq's trainer re-raises a failed load_state_dict on resume as a generic Exception;
    the error boundary reports our fingerprint refusal from its context, in one line."""
    import shutil

    from conftest import TRAIN_ARGS
    from tiny import make_tiny_gpt

    save = tmp_path / "ckpt"
    shutil.copytree(trained["save"], save)
    other = str(tmp_path / "other")
    make_tiny_gpt(other, os.path.join(trained["plm"], "spiece.model"), seed=5)
    p = cli("fairseq-plm-train", trained["data"], "--plm", other, *TRAIN_ARGS, "--max-epoch", "3",
            "--save-dir", str(save), check=False)
    line = one_line_error(p.stderr, "fairseq-plm-train")
    assert p.returncode == 1 and "fingerprint" in line and "(resuming from " in line and "Traceback" not in p.stderr


def test_checkpoint_with_a_version_1_fingerprint_still_loads(trained, tmp_path):
    from fairseq_plm.checkpoints import load_torch_file
    from fairseq_plm.plm.frozen import sampled_fingerprint_v1
    from fairseq_plm.plm.loading import load_plm

    state = load_torch_file(os.path.join(trained["save"], "checkpoint_last.pt"))
    state["model"]["plm_fingerprint"] = sampled_fingerprint_v1(load_plm(trained["plm"]))
    old = str(tmp_path / "old.pt")
    torch.save(state, old)
    p = cli("fairseq-plm-generate", trained["data"], "--path", old, *GEN, "--batch-size", "13")
    assert "version-1 PLM fingerprint" in p.stderr and len(re.findall(r"^H-\d+\t", p.stdout, flags=re.M)) == 13
    from tiny import make_tiny_gpt

    other = str(tmp_path / "other")
    make_tiny_gpt(other, os.path.join(trained["plm"], "spiece.model"), seed=5)
    p = cli("fairseq-plm-generate", trained["data"], "--path", old, *GEN, "--model-overrides", repr({"plm": other}),
            check=False)
    assert p.returncode != 0 and "fingerprint" in one_line_error(p.stderr, "fairseq-plm-generate")


# ------------------------------------------------------------------ MPT commands

def test_mpt_commands_are_one_line(tmp_path, capsys):
    bad = write(tmp_path / "r.json", "[1, 2]")
    code, err = run_main(mpt_eval.aggregate, [bad], capsys)
    assert code != 0 and "not a fairseq-plm-mpt-eval result" in one_line_error(err, "fairseq-plm-mpt-aggregate")
    code, err = run_main(mpt_eval.main, ["--path", tmp_path / "none.pt"], capsys)
    assert code != 0 and "checkpoint not found" in one_line_error(err, "fairseq-plm-mpt-eval")

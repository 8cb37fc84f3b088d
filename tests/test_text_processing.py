"""MSP App. A.2 pre/post-processing and sacrebleu scoring."""


from fairseq_plm.data.text_processing import bleu, remove_romanian_diacritics, restore_chinese_punctuation
from tiny import cli


def test_romanian_diacritics():
    assert remove_romanian_diacritics("Știință și țară: ÎNCĂ, mâine; ş ţ Ş Ţ") == "Stiinta si tara: INCA, maine; s t S T"


def test_chinese_punctuation_restored_only_next_to_chinese():
    nfkc = "你好,世界!价格是1,000元(人民币)。请问:可以吗?Hello, world! (ok)"
    assert restore_chinese_punctuation(nfkc) == "你好，世界！价格是1,000元（人民币）。请问：可以吗？Hello, world! (ok)"


def test_bleu_signature_names_the_tokenizer():
    score, sig = bleu(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert round(score.score) == 100 and "tok:13a" in sig and "case:mixed" in sig
    _, sig = bleu(["你好世界"], ["你好世界"], tokenize="zh")
    assert "tok:zh" in sig


def test_score_command_reads_generate_output(tmp_path):
    out = tmp_path / "gen.out"
    out.write_text("S-1\tHallo Welt\nT-1\tHello world\nH-1\t-0.1\t▁Hello ▁world\nD-1\t-0.1\tHello world\n"
                   "S-0\tthe house\nT-0\tthe house is red\nD-0\t-0.2\tthe house is red\n")
    p = cli("fairseq-plm-score", "--generate-output", out)
    assert p.stdout.startswith("BLEU = 100.00 (2 sentences)") and "nrefs:1" in p.stdout
    copy = cli("fairseq-plm-score", "--generate-output", out, "--source-as-hypothesis").stdout
    assert float(copy.split()[2]) < 100
    (tmp_path / "bad.out").write_text("T-0\tx\n")
    p = cli("fairseq-plm-score", "--generate-output", tmp_path / "bad.out", check=False)
    assert p.returncode != 0 and "lacks hypotheses" in p.stderr

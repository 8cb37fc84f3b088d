"""benchmarks/gpu_check.sh: its CPU dry run (fp32, tiny shapes) goes through every stage a GPU
run goes through: synthetic data and PLMs, each method's train + generate (MSP with an output
shortlist), every benchmark script and the profiler, and writes its three output files."""

import json
import os
import subprocess
import sys
import tarfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_cpu_dry_run(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    p = subprocess.run(["bash", os.path.join(REPO, "benchmarks", "gpu_check.sh"), str(out), "--device", "cpu"],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    assert sorted(os.listdir(out)) == ["logs.tar.gz", "results.json", "summary.md"]
    results = json.load(open(out / "results.json"))
    e2e = {r["method"]: r for r in results["e2e"]}
    assert set(e2e) == {"msp", "sga", "fusion", "mpt"} and all(r["ok"] for r in e2e.values())
    assert all(r["hypotheses"] == 13 for m, r in e2e.items() if m != "mpt")
    bench = {b["name"]: b for b in results["benchmarks"]}
    assert set(bench) == {"msp", "sga", "backbone", "fusion", "profile"} and all(b["ok"] for b in bench.values())
    ratios = bench["msp"]["figures"]["ratios"]
    assert {"msp/single-stage (full)", "msp/single-stage (shortlist)", "shortlist speed-up (msp)"} <= set(ratios)
    assert "sga/msp speed-up (shortlist)" in bench["sga"]["figures"]["ratios"]
    summary = open(out / "summary.md").read()
    assert "| msp | fp32 | yes |" in summary and "## profile" in summary
    with tarfile.open(out / "logs.tar.gz") as tar:
        assert "logs/e2e-msp-fp32-train.log" in tar.getnames()
    # a usage error is one line, not a traceback
    p = subprocess.run(["bash", os.path.join(REPO, "benchmarks", "gpu_check.sh")], capture_output=True, text=True)
    assert p.returncode == 2 and "usage:" in p.stderr

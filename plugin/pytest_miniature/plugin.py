"""pytest plugin: a thin adapter over :class:`miniature.session.Session`; loaded in every run, so nothing heavy at import."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from miniature.session import Session


@dataclass
class MiniatureState:
    session: Session
    pyproject: Path | None
    collected: bool = False  # pyproject.toml was collected (else its checks are added after collection)
    worker_reports: list[dict[str, Any]] = field(default_factory=list)  # on the xdist controller


state_key = pytest.StashKey[MiniatureState]()


def pytest_addoption(parser: pytest.Parser) -> None:
    from miniature.options import add_options

    group = parser.getgroup("miniature", "pytest-miniature: gate compressed models on behaving like their reference")
    add_options(group.addoption, plugin=True)


def pytest_configure(config: pytest.Config) -> None:
    from miniature.errors import UsageError
    from miniature.options import resolve_settings
    from miniature.session import Session

    config.addinivalue_line("markers", "miniature: a model-behaviour gate of pytest-miniature")
    try:
        # The -c file, else upward from the invocation dir; never the rootdir, which --reference /other/proj/m moves.
        inifile = config.inipath if config.option.inifilename else None
        settings, pyproject = resolve_settings(config.option, Path(config.invocation_params.dir), inifile=inifile)
    except UsageError as exc:
        raise pytest.UsageError(f"pytest-miniature: {exc}") from None
    tty = lambda: config.option.verbose >= 0 and getattr(config.pluginmanager.get_plugin("terminalreporter"), "isatty", False)  # noqa: E731
    session = Session(settings, progress=lambda line: _progress(config, line), live=tty)  # -q or a log: a line per step
    config.stash[state_key] = MiniatureState(session, pyproject)


def _progress(config: pytest.Config, line: str) -> None:  # on the terminal, even while a test's output is captured
    capture = config.pluginmanager.get_plugin("capturemanager")  # as live logging does: past the test's capture
    if (reporter := config.pluginmanager.get_plugin("terminalreporter")) is not None:
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.write_line(f"miniature: {line}")


def pytest_report_header(config: pytest.Config) -> str:
    return config.stash[state_key].session.header(config.stash[state_key].pyproject)


@pytest.fixture(scope="session")
def miniature_session(request: pytest.FixtureRequest) -> Session:
    """The run's session: every model runs at most once per dataset, whatever the number of tests."""
    return request.config.stash[state_key].session


def _configured(spec: Any, what: str, flag: str, key: str) -> Any:
    if spec is None:
        pytest.fail(f"pytest-miniature: no {what}; pass {flag} SPEC or set {key} in [tool.miniature]", pytrace=False)
    return spec


@pytest.fixture(scope="session")
def reference(miniature_session: Session):
    """The reference model (``--reference`` or ``reference`` in [tool.miniature])."""
    spec = miniature_session.settings.reference
    return miniature_session.model(_configured(spec, "reference model", "--reference", "reference"))


@pytest.fixture(scope="session")
def candidate(request: pytest.FixtureRequest, miniature_session: Session):
    """Each candidate model in turn (``--candidate``, repeatable, or ``candidates`` in [tool.miniature])."""
    return miniature_session.model(_configured(getattr(request, "param", None), "candidate model", "--candidate",
                                              "candidates"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "candidate" in metafunc.fixturenames:
        specs = metafunc.config.stash[state_key].session.settings.candidates or [None]
        metafunc.parametrize("candidate", specs, ids=[getattr(s, "name", "no-candidate") for s in specs], indirect=True,
                             scope="session")


def _data_fixture(name: str, key: str, what: str, optional: bool = False):
    flag = f"--miniature-{key.replace('_', '-')}"  # as session.option_flag says it (that import is heavy here)

    def fixture(miniature_session: Session):
        spec = getattr(miniature_session.settings, key)
        return None if optional and spec is None else miniature_session.dataset(_configured(spec, what, flag, key))

    fixture.__doc__ = f"The {what} (``{flag}`` or ``{key}`` in [tool.miniature]), loaded once."
    return pytest.fixture(scope="session", name=name)(fixture)


eval_set, train_set, ood_set, attack_set = (_data_fixture(*names) for names in (
    ("eval_set", "eval", "eval set"), ("train_set", "train", "training bank"), ("ood_set", "ood", "challenge (OOD) set"),
    ("attack_set", "attack_set", "attack set")))
validation_set = _data_fixture("validation_set", "validation", "in-distribution validation set (None: a tenth of the bank)",
                               optional=True)


class MiniatureFile(pytest.File):
    """The pyproject.toml whose checks and thresholds become one item per (check, candidate)."""

    def collect(self):
        self.config.stash[state_key].collected = True
        for check, threshold, spec in self.config.stash[state_key].session.configured_checks():
            yield MiniatureCheckItem.from_parent(self, name=f"{check}[{spec.name}]", check=check, threshold=threshold,
                                                 candidate_spec=spec)


class MiniatureCheckItem(pytest.Item):
    """One configured check for one candidate: a threshold missed fails it; a model or data problem errors it."""

    def __init__(self, *, check: str, threshold: Any, candidate_spec: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check, self.threshold, self.candidate_spec = check, threshold, candidate_spec
        self.add_marker("miniature")

    def runtest(self) -> None:
        self.config.stash[state_key].session.run_check(self.check, self.candidate_spec, self.threshold)

    def repr_failure(self, excinfo, style=None):  # say it in its own words, no traceback
        from miniature.errors import MiniatureError

        known = excinfo.errisinstance((AssertionError, MiniatureError))
        return str(excinfo.value) if known else super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, f"miniature {self.name}"


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    state = parent.config.stash[state_key]
    collect = state.session.configured_checks() and file_path == state.pyproject
    return MiniatureFile.from_parent(parent, path=file_path) if collect else None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # The checks run even when collection never visits pyproject.toml (say, testpaths = ["tests"]).
    state = config.stash[state_key]
    if state.session.configured_checks() and not state.collected:
        items.extend(MiniatureFile.from_parent(session, path=state.pyproject or Path(config.rootpath, "pyproject.toml")).collect())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A model or data set that could not be used in a test's ``assert_*`` call is an error (E, <error>), never a
    failed gate: pytest tells errors by their phase, so the report moves to setup, as a broken fixture's would."""
    from miniature.errors import MiniatureError

    report = (yield).get_result()
    if call.excinfo is not None and call.excinfo.errisinstance(MiniatureError):  # in the report's errors (a check's: named)
        item.config.stash[state_key].session.record_error(call.excinfo.value, check=None, candidate=None)
        report.when = "setup" if call.when == "call" else report.when


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """Attach every result a test recorded to it as properties (``--junitxml`` writes them)."""
    before = len(item.config.stash[state_key].session.ledger.log)
    yield
    item.user_properties += item.config.stash[state_key].session.junit_properties(since=before)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """On an xdist worker: hand this worker's report to the controller, which reports for all."""
    if hasattr(session.config, "workeroutput") and (state := session.config.stash.get(state_key, None)) and state.session.recorded:
        session.config.workeroutput["miniature"] = state.session.worker_report()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """On the xdist controller: collect each worker's report."""
    if (report := getattr(node, "workeroutput", {}).get("miniature")) is not None:
        node.config.stash[state_key].worker_reports.append(report)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(state_key, None)
    if hasattr(config, "workerinput") or state is None:  # xdist worker: the controller reports
        return
    if lines := state.session.finish(exit_status=int(exitstatus), options=config.option,
                                     here=Path(config.invocation_params.dir), worker_reports=state.worker_reports):
        terminalreporter.section("miniature")
        terminalreporter.write_line("\n".join(lines))

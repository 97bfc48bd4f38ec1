"""A session: settings, an engine, the ledger of results and verdicts, the all-pairs matrices, the report.

The pytest plugin and ``miniature compare`` drive the same session: the plugin's hooks
delegate to it in a line or two, and ``compare`` is a loop over its configured checks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .characteristics import registry
from .characteristics.base import Characteristic, Result, Threshold, Verdict
from .characteristics.bootstrap import RESAMPLES
from .config import Settings
from .data import DatasetSpec, EvalSet
from .engine import Engine, make_engine
from .errors import GateFailure, MiniatureError, NotApplicable, NotCached, UsageError
from .evidence import Evidence, Model
from .models import ModelSpec
from .outputs import ModelOutputs


@dataclass
class Entry:
    """One line of the ledger: a characteristic of a pair, its result and verdict, or why it did not apply."""

    characteristic: str
    reference: str
    candidate: str
    dataset: str
    result: Result | None = None
    verdict: Verdict | None = None
    #: Why the characteristic did not apply (then ``result`` is None).
    reason: str | None = None
    #: What it ran on and with: the all-pairs matrix computes other pairs the same way.
    data: Mapping[str, EvalSet | None] = field(default_factory=dict, repr=False)
    params: Mapping[str, Any] = field(default_factory=dict, repr=False)
    #: How the outputs it read were computed in this run (engine.computed_by): kept beside the result, as the verdict.
    computed_by: Mapping[str, Any] | None = None

    @property
    def identity(self) -> tuple:
        if self.result is not None:
            return self.result.identity
        return (self.characteristic, self.reference, self.candidate, self.dataset, None, None)

    def as_dict(self) -> dict[str, Any]:
        """The entry as the JSON report stores it (schema v1 fields, plus ``status`` and ``reason``)."""
        if self.result is None:
            return {"metric": self.characteristic, "reference": self.reference, "candidate": self.candidate,
                    "dataset": self.dataset, "status": "not_applicable", "reason": self.reason}
        out = {**self.result.as_dict(), "status": "ok"}
        if self.verdict is not None:
            out.update(self.verdict.as_dict())
        if self.computed_by is not None:
            out["computed_by"] = dict(self.computed_by)
        return out


@dataclass
class Pending:
    """A check computed but not yet recorded or gated."""

    characteristic: Characteristic
    reference: Model
    candidate: Model
    data: dict[str, EvalSet | None]
    params: dict[str, Any]
    result: Result | None = None


class Ledger:
    """The results of a run, one per identity: the same check re-run with the same settings replaces its entry."""

    def __init__(self) -> None:
        self._entries: dict[tuple, Entry] = {}
        #: Identities in the order they were recorded, repeats included (JUnit reads what a test added).
        self.log: list[tuple] = []

    def record(self, entry: Entry) -> Entry:
        self._entries.pop(entry.identity, None)
        self._entries[entry.identity] = entry
        self.log.append(entry.identity)
        return entry

    def since(self, position: int) -> list[Entry]:
        """The entries recorded after ``position`` entries of the log, each once."""
        return [self._entries[i] for i in dict.fromkeys(self.log[position:]) if i in self._entries]

    @property
    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    @property
    def results(self) -> list[Result]:
        return [e.result for e in self._entries.values() if e.result is not None]


class Session:
    """Settings, engine, ledger: everything one run of the gate knows."""

    def __init__(self, settings: Settings | None = None, *, progress: Callable[[str], None] | None = None,
                 engine: Engine | None = None, live: bool | Callable[[], bool] | None = None) -> None:
        """``live``: progress lines while a step runs (None: when stdout is a terminal), else one per finished step."""
        self.settings = settings if settings is not None else Settings()
        self.engine = engine if engine is not None else make_engine(self.settings, progress=progress, live=live)
        self.ledger = Ledger()
        #: Errors that ended a check, a test or the run (the report's ``errors``), and the exceptions behind them.
        self.errors: list[dict[str, Any]] = []
        self._errors_seen: list[BaseException] = []
        self._models: dict[str, Model] = {}

    # -- models and data ------------------------------------------------------------------------

    def model(self, spec: str | ModelSpec) -> Model:
        """The handle of ``spec``; a different model that would show under a name already taken is shown
        by its full spec instead (two rows named alike would merge in every report)."""
        spec = self.engine.parse_model(spec)
        if spec.text not in self._models:
            from .models.spec import unique_names

            taken = [m.spec for m in self._models.values()]
            self._models[spec.text] = Model(self, unique_names([*taken, spec])[-1])
        return self._models[spec.text]

    def dataset(self, spec: str | DatasetSpec | EvalSet) -> EvalSet:
        return self.engine.dataset(spec)

    def outputs(self, model: Model, eval_set: EvalSet) -> ModelOutputs:
        """``model``'s raw outputs on ``eval_set`` (what :meth:`Model.outputs` answers)."""
        return self.engine.outputs(model, eval_set)

    @property
    def known_models(self) -> list[Model]:
        """Every model this session has handed out, in order."""
        return list(self._models.values())

    @property
    def results(self) -> list[Result]:
        return self.ledger.results

    @property
    def recorded(self) -> bool:
        """Whether this session holds anything a report would show: a result, or an error."""
        return bool(self.ledger.entries or self.errors)

    def record_error(self, error: MiniatureError, *, check: str | None, candidate: Any) -> None:
        """Note ``error`` for the report (once, however many callers see it): the check and the candidate it ended,
        when known (a Model, a spec or a name), its kind and its message."""
        if any(error is seen for seen in self._errors_seen):
            return
        self._errors_seen.append(error)
        if isinstance(candidate, (str, ModelSpec)):
            try:
                candidate = self.model(candidate)  # named as its results would be
            except MiniatureError:
                pass
        entry = {"check": check, "candidate": getattr(candidate, "name", candidate), "kind": error.kind,
                 "message": str(error)}
        if entry not in self.errors:
            self.errors.append(entry)

    @property
    def stats(self):
        return self.engine.stats

    # -- checks ---------------------------------------------------------------------------------

    def measure(self, characteristic: Characteristic, reference: Model, candidate: Model,
                data: Mapping[str, EvalSet | None], params: Mapping[str, Any], *, threshold: float | None = None,
                resamples: int = RESAMPLES, record: bool = True) -> Result:
        """Compute ``characteristic`` for the pair, record it with its verdict, and fail a gate outside ``threshold``."""
        __tracebackhide__ = True
        pending = Pending(characteristic, reference, candidate, dict(data), dict(params))
        try:
            pending.result = characteristic.measure(evidence=self.engine, reference=reference, candidate=candidate,
                                                    data=data, params=params, resamples=resamples)
        except MiniatureError as exc:
            self.record_error(exc, check=characteristic.name, candidate=candidate)
            raise
        return self.settle(pending, threshold, record=record).result

    def settle(self, pending: Pending, threshold: float | None, *, record: bool = True) -> Entry:
        """Record a computed check with its verdict; :class:`~miniature.errors.GateFailure` when the gate fails."""
        __tracebackhide__ = True
        characteristic, result = pending.characteristic, pending.result
        if not isinstance(result, Result) or result.metric != characteristic.name:
            raise UsageError(f"Characteristic {characteristic.name!r} ({type(characteristic).__qualname__}) returned "
                             f"{result!r}; expected a Result subclass whose metric is {characteristic.name!r}")
        verdict = None
        if threshold is not None:
            verdict = Verdict.decide(result, threshold, bound=characteristic.bound, mode=self.settings.gate)
        used = [d for d in pending.data.values() if d is not None]
        entry = Entry(characteristic.name, pending.reference.name, pending.candidate.name, result.dataset, result,
                      verdict, data=pending.data, params=pending.params,
                      computed_by=self.engine.computed_by([pending.reference, pending.candidate], used))
        if record:
            self.ledger.record(entry)
        if verdict is not None and not verdict.passed:
            from .report.terminal import failure_message

            raise GateFailure(failure_message(characteristic, result, verdict))
        return entry

    def configured_data(self, characteristic: Characteristic) -> dict[str, EvalSet | None]:
        """The configured data sets ``characteristic`` needs (a usage error naming the missing ones) and uses."""
        settings = self.settings
        missing = [f"{key} ({option_flag(key)})" for key in characteristic.needs if getattr(settings, key, None) is None]
        if missing:
            raise UsageError(f"{characteristic.name} needs {' and '.join(missing)}; configure "
                             f"{'it' if len(missing) == 1 else 'them'} on the command line or in [tool.miniature]")
        keys = [*characteristic.needs, *characteristic.uses]
        return {key: self.dataset(getattr(settings, key)) if getattr(settings, key, None) is not None else None
                for key in keys}

    def prepare(self, name: str, candidate: str | ModelSpec, threshold: Threshold | None = None, *,
                resamples: int = RESAMPLES, evidence: Evidence | None = None) -> Pending:
        """Compute check ``name`` for ``candidate`` against the configured reference on the configured data,
        without recording it yet: a model or data problem surfaces here, before any verdict. ``evidence``: where
        the outputs come from (default: this session's engine)."""
        characteristic = registry.get(name)
        data = self.configured_data(characteristic)
        if self.settings.reference is None:
            raise UsageError(f"{name} needs reference (--reference); configure it on the command line or in [tool.miniature]")
        pending = Pending(characteristic, self.model(self.settings.reference), self.model(candidate), data,
                          characteristic.params_for(threshold))
        pending.result = characteristic.measure(evidence=evidence or self.engine, reference=pending.reference,
                                                candidate=pending.candidate, data=data, params=pending.params,
                                                resamples=resamples)
        return pending

    def run_check(self, name: str, candidate: str | ModelSpec, threshold: Threshold | None = None, *,
                  explicit: bool = True) -> Entry:
        """Run check ``name`` for ``candidate``; with a ``threshold`` it is a gate (GateFailure when it fails).

        A check that cannot apply raises :class:`~miniature.errors.NotApplicable` when ``explicit``
        (the user asked for it), else it is recorded as not applicable with the reason.
        """
        __tracebackhide__ = True
        try:
            pending = self.prepare(name, candidate, threshold)
        except NotApplicable as exc:
            if explicit:
                self.record_error(exc, check=name, candidate=candidate)
                raise
            characteristic = registry.get(name)
            data = self.configured_data(characteristic)
            primary = data.get(characteristic.primary or next(iter(characteristic.needs), ""))
            return self.ledger.record(Entry(characteristic.name, self.model(self.settings.reference).name,
                                            self.model(candidate).name, primary.name if primary else "", reason=str(exc)))
        except MiniatureError as exc:  # it ends this check: the report says so
            self.record_error(exc, check=name, candidate=candidate)
            raise
        return self.settle(pending, threshold.value if threshold is not None else None)

    def chosen_checks(self) -> tuple[list[str], bool]:
        """(the checks to run, whether the user chose them): ``checks``, else the thresholds' checks,
        else every characteristic whose data is configured and whose outputs the run's task produces."""
        settings = self.settings
        if settings.checks:
            return list(settings.checks), True
        if settings.thresholds:
            return list(settings.thresholds), True
        from . import tasks

        # Those the run's models can give what they read (a classifier generates no text) and whose data is given.
        produces = set(tasks.get(settings.task).produces)
        known = registry.characteristics()
        return [n for n, c in known.items() if set(c.outputs) <= produces
                and all(getattr(settings, k, None) is not None for k in c.needs)], False

    def configured_checks(self) -> list[tuple[str, Threshold | None, ModelSpec]]:
        """(check, threshold, candidate) of each configured check item: the thresholds' checks, or ``checks``."""
        settings = self.settings
        if not (settings.thresholds or settings.checks):
            return []
        return [(check, settings.thresholds.get(check), spec) for check in self.chosen_checks()[0]
                for spec in settings.candidates]

    def header(self, pyproject: Any) -> str:
        """The line that says which configuration file a run uses and which checks it collects."""
        checks = ", ".join(dict.fromkeys(check for check, _, _ in self.configured_checks()))
        return f"miniature: config {pyproject or 'none'}" + (f"; checks: {checks}" if checks else "")

    def unused_data(self, checks: Iterable[str]) -> list[str]:
        """A warning for each configured data set that none of ``checks`` uses."""
        used = set()
        for name in checks:
            characteristic = registry.get(name)
            used |= {*characteristic.needs, *characteristic.uses}
        configured = ("eval", "train", "validation", "ood", "attack_set")
        return [f"{key} ({option_flag(key)}) is given but no chosen check uses it (checks: {', '.join(checks) or 'none'})"
                for key in configured if getattr(self.settings, key, None) is not None and key not in used]

    # -- all pairs ------------------------------------------------------------------------------

    def matrices(self, evidence: Evidence | None = None) -> dict[str, dict[str, Any]]:
        """The paper's Table 2 for each pairwise characteristic with two or more candidates: its value
        for every pair of models, candidates among themselves too, from outputs already computed
        (``evidence``: where they come from; default: this session's engine).

        The models are those of the characteristic's first result's setting (same data set and
        parameters, same reference); each missing pair is computed like that result, without an interval.
        """
        out = {}
        for name, characteristic in registry.characteristics().items():
            entries = [e for e in self.ledger.entries if e.characteristic == name and e.result is not None]
            if not characteristic.pairwise or not entries:
                continue
            first = entries[0]
            same = [e for e in entries if e.result.identity[3:] == first.result.identity[3:]
                    and e.reference == first.reference]
            names = [first.reference, *dict.fromkeys(e.candidate for e in same)]
            if len(names) < 3:
                continue
            values: dict[tuple[str, str], float | None] = {(first.reference, e.candidate): float(e.result) for e in same}
            reasons = []
            models = {m.name: m for m in self.known_models}
            params = characteristic.pair_params(first.result.as_dict(plain=False), first.params)
            for i, a in enumerate(names):
                for b in names[i + 1:]:
                    if (a, b) in values:
                        continue
                    try:
                        values[(a, b)] = float(characteristic.measure(
                            evidence=evidence or self.engine, reference=models[a], candidate=models[b], data=first.data,
                            params=params, resamples=0))
                    except (NotApplicable, NotCached) as exc:  # NotCached: xdist's controller, an output no worker cached
                        values[(a, b)] = None
                        reasons.append(f"{a} vs {b}: {exc}")
            out[name] = {"title": characteristic.title, "dataset": first.dataset, "models": names,
                         "pairs": [{"a": a, "b": b, "value": v} for (a, b), v in values.items()],
                         **({"not_applicable": reasons} if reasons else {})}
        return out

    def matrices_from_cache(self) -> dict[str, dict[str, Any]]:
        """The all-pairs matrices of the configured pairwise checks from the outputs the workers cached (pytest-xdist's
        controller ran no check and holds no model): no model runs here; a check whose outputs are not all in the
        cache (no cache, or a worker failed) is left out."""
        from .errors import MiniatureError

        if not self.settings.cache_dir:
            return {}
        # A plain local engine that only reads the cache: never a model run, and never a Ray cluster started to draw.
        cached = Engine(self.settings, cache_only=True)
        try:
            for check, threshold, spec in self.configured_checks():
                if registry.get(check).pairwise:
                    try:
                        # The workers reported these results with their intervals: only the matrix's inputs are wanted.
                        self.settle(self.prepare(check, spec, threshold, resamples=0, evidence=cached), None)
                    except MiniatureError:
                        continue
            return self.matrices(cached)
        except MiniatureError:
            return {}

    # -- reports --------------------------------------------------------------------------------

    def report(self, *, exit_status: int | None = None, matrices: bool = True) -> dict[str, Any]:
        """The JSON report of everything this session computed."""
        from .errors import MiniatureError
        from .report.json_report import build_report

        try:
            tables = self.matrices() if matrices else {}
        except MiniatureError as exc:  # a pair that cannot be compared must not hide the rest of the report
            tables = {"error": {"not_computed": str(exc)}}
        return build_report(self, exit_status=exit_status, matrices=tables, examples=self.failed_examples())

    def failed_examples(self) -> dict[tuple, list[dict[str, str]]]:
        """For each failed gate, the points that differ most, with their text (by the entry's identity)."""
        from .errors import MiniatureError

        out = {}
        for entry in self.ledger.entries:
            if entry.verdict is None or entry.verdict.passed:
                continue
            models = {m.name: m for m in self.known_models}
            try:
                out[entry.identity] = registry.get(entry.characteristic).examples(
                    evidence=self.engine, reference=models[entry.reference], candidate=models[entry.candidate],
                    data=entry.data, result=entry.result)
            except (MiniatureError, KeyError):  # the examples illustrate; they must never cost the report
                continue
        return out

    def worker_report(self) -> dict[str, Any]:
        """This process's report as plain JSON types (pytest-xdist's execnet carries nothing else), without
        matrices: those need every model, which only the controller's merge sees."""
        import json

        return json.loads(json.dumps(self.report(matrices=False), default=str))

    def junit_properties(self, *, since: int) -> list[tuple[str, str]]:
        """JUnit properties of every entry recorded after ``since`` log positions (a test's own results)."""
        properties = []
        for entry in self.ledger.since(since):
            name = f"miniature.{entry.characteristic}[{entry.candidate}]"
            if entry.result is None:
                properties.append((f"{name}.status", "not_applicable"))
                continue
            properties.append((name, f"{float(entry.result):.4f}"))
            if entry.result.interval:
                properties.append((f"{name}.ci95", f"{entry.result.interval[0]:.4f},{entry.result.interval[1]:.4f}"))
            if entry.verdict is not None:
                properties += [(f"{name}.threshold", f"{entry.verdict.threshold:g}"),
                               (f"{name}.passed", str(entry.verdict.passed).lower())]
            properties.append((f"{name}.n", str(entry.result.n)))
        return properties

    def finish(self, *, exit_status: int | None, options: Any, here: Path,
               worker_reports: Sequence[dict[str, Any]] = ()) -> list[str]:
        """The summary lines of a finished run, after writing the reports the options ask for.

        With ``worker_reports`` (pytest-xdist's controller, which ran no check itself) the summary
        is that of the merged reports. Nothing when the run computed nothing.
        """
        from .report.json_report import merge_reports
        from .report.writing import summary_lines, write_reports

        merged = bool(worker_reports) and not self.ledger.entries
        report = merge_reports(list(worker_reports), exit_status=exit_status) if merged else \
            self.report(exit_status=exit_status)
        if merged:
            report["matrices"] = self.matrices_from_cache()
        outputs = report["outputs"]
        if not report["results"] and not outputs["computed"] and not outputs["from_cache"] and not report["errors"]:
            return []
        lines = summary_lines(report, cache=str(self.settings.cache_dir or "disabled"))
        if merged:
            at = next(i for i, line in enumerate(lines) if line.startswith("model outputs:"))
            lines.insert(at, f"(results of {len(worker_reports)} xdist workers" + (
                "; the all-pairs matrices from the outputs they cached)" if report["matrices"] else ")"))
        return lines + write_reports(report, options, here)


def option_flag(key: str) -> str:
    """The pytest option that sets a data set (``eval`` -> ``--miniature-eval``)."""
    return f"--miniature-{key.replace('_', '-')}"


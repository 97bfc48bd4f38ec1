"""Settings: ``[tool.miniature]`` in pyproject.toml, overridden by command-line options.

Shared by the pytest plugin and the ``miniature`` CLI so both read one config the same way.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from . import tasks
from .attack.settings import AttackSettings
from .characteristics import registry
from .characteristics.base import Threshold
from .data.spec import DatasetSpec
from .errors import UsageError
from .models.device import check_device, check_dtype
from .models.spec import ModelSpec
from .outputs import POOLINGS
from .validation import check_finite, check_positive_int

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

GATE_MODES = ("point", "lower")
#: Who runs the models: this process, or Ray actors (see engine/ray.py).
ENGINES = ("local", "ray")


@dataclass
class Settings:
    """Everything a run needs besides the models and datasets themselves."""

    # Specs are strings (resolved against base_dir) or specs parsed already (from the command line).
    reference: str | ModelSpec | None = None
    candidates: list[str | ModelSpec] = field(default_factory=list)
    eval: str | DatasetSpec | None = None
    #: In-distribution training bank, its validation set, and the challenge set of the OOD check.
    train: str | DatasetSpec | None = None
    validation: str | DatasetSpec | None = None
    ood: str | DatasetSpec | None = None
    #: Labelled texts attacked by the adversarial-vulnerability check, and how they are attacked.
    attack_set: str | DatasetSpec | None = None
    attack: AttackSettings = field(default_factory=AttackSettings)
    task: str = tasks.DEFAULT
    pooling: str = "cls"
    #: What a gate compares with its threshold: the point estimate, or the lower end of its
    #: bootstrap 95% interval (so a small eval set cannot pass by luck).
    gate: str = "point"
    #: How the OOD check reads its threshold off the validation scores: Sun et al.'s own rule
    #: (``sun2022``) or the ``quantile`` this project used before (they differ by one rank).
    ood_threshold_rule: str = "sun2022"
    #: K values reported for the KNN-based checks (the paper's Figure 1); values above a set's size are skipped.
    sweep: list[int] = field(default_factory=lambda: [5, 10, 20, 50, 100])
    batch_size: int = 32
    #: Causal LMs: megabytes of logits one batch of windows may hold per model (windows x tokens x vocabulary
    #: float32); it sizes their batches, where ``batch_size`` sizes the others'.
    logits_memory: int = 64
    max_length: int = 256
    #: Extractive QA: overlap of a long context's windows (tokens), the longest answer span
    #: (tokens), and how far the no-answer score must beat the best span to answer "".
    doc_stride: int | None = None  # None: min(128, max_length // 2)
    max_answer_length: int = 30
    null_threshold: float = 0.0
    cache_dir: Path | None = Path(".miniature_cache")
    label_map: dict[str, int | str] | None = None
    #: Let models run their own Python (config.json's auto_map). Off: such a model is refused, never
    #: asked about on stdin. Per model: ``?trust_remote_code=true`` in its spec.
    trust_remote_code: bool = False
    models: dict[str, str] = field(default_factory=dict)
    thresholds: dict[str, Threshold] = field(default_factory=dict)
    #: Where models run: auto (CUDA when torch sees one, else MPS, else the CPU), cpu, cuda, cuda:N or mps;
    #: and the dtype transformers models are loaded in. Per model: ``?device=`` and ``?dtype=`` in its spec.
    device: str = "auto"
    dtype: str = "float32"
    #: Who runs the forward passes and attacks: this process (local) or a Ray cluster (ray).
    engine: str = "local"
    #: Ray: actors per model (None: one per CPU of the cluster, or per GPU when the device is CUDA).
    workers: int | None = None
    #: Ray: seconds to join the cluster RAY_ADDRESS names before it is an error (Ray itself retries for minutes).
    ray_connect_timeout: float = 60.0
    #: The characteristics to run (None: those with thresholds, else every one whose data is given).
    checks: list[str] | None = None
    #: Relative paths in specs resolve against this directory.
    base_dir: Path = field(default_factory=Path.cwd)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def stride(self) -> int:
        """The QA windows' overlap: ``doc_stride``, else min(128, max_length // 2)."""
        return self.doc_stride if self.doc_stride is not None else max(1, min(128, self.max_length // 2))

    def validate(self) -> None:
        owner = "[tool.miniature]"
        if self.task not in tasks.names():
            raise UsageError(f"Expected task to be one of {', '.join(tasks.names())} in {owner} but got {self.task!r}")
        task = tasks.get(self.task)
        check_positive_int(self.batch_size, "batch_size", owner)
        check_positive_int(self.logits_memory, "logits_memory", owner)
        check_positive_int(self.max_length, "max_length", owner)
        if self.doc_stride is not None:
            check_positive_int(self.doc_stride, "doc_stride", owner)
        check_positive_int(self.max_answer_length, "max_answer_length", owner)
        self.null_threshold = check_finite(self.null_threshold, "null_threshold", owner)
        if self.doc_stride is not None and self.doc_stride >= self.max_length:
            raise UsageError(f"Expected doc_stride ({self.doc_stride}) to be below max_length ({self.max_length}) "
                             f"(--miniature-doc-stride / [tool.miniature] doc_stride): windows overlap by doc_stride tokens")
        if isinstance(self.candidates, (str, ModelSpec)):
            self.candidates = [self.candidates]
        if not isinstance(self.candidates, list) or not all(isinstance(c, (str, ModelSpec)) for c in self.candidates):
            raise UsageError(f"Expected candidates to be a list of model specs in {owner} but got {self.candidates!r}")
        if not isinstance(self.models, dict) or not all(isinstance(v, str) for v in self.models.values()):
            raise UsageError(f"Expected [tool.miniature.models] to map alias names to model specs but got {self.models!r}")
        if self.label_map is not None and not isinstance(self.label_map, dict):
            raise UsageError(f"Expected label_map to be a table (dataset label = model label) but got {self.label_map!r}")
        for label, target in (self.label_map or {}).items():
            if isinstance(target, bool) or not isinstance(target, (int, str)):
                raise UsageError(f"Expected label_map's {label!r} in {owner} to be a model label name (a string) or a "
                                 f"class index (a whole number) but got {target!r}")
        if not isinstance(self.thresholds, dict):
            raise UsageError(f"Expected [tool.miniature.thresholds] to be a table but got {self.thresholds!r}")
        thresholds = {}
        for name, value in self.thresholds.items():
            try:
                characteristic = registry.get(name, owner="[tool.miniature.thresholds]")
            except UsageError:
                raise UsageError(f"Unknown threshold {name!r} in [tool.miniature.thresholds]; expected one of "
                                 f"{', '.join(registry.names())}") from None
            if characteristic.name in thresholds:
                raise UsageError(f"Give either {characteristic.name} or {name} in [tool.miniature.thresholds], not both "
                                 f"(they are the same gate)")
            thresholds[characteristic.name] = characteristic.parse_threshold(value)
        self.thresholds = thresholds
        if self.checks is not None:
            if isinstance(self.checks, str):
                self.checks = [c.strip() for c in self.checks.split(",") if c.strip()]
            if not isinstance(self.checks, list) or not all(isinstance(c, str) for c in self.checks):
                raise UsageError(f"Expected checks to be a list of characteristic names in {owner} but got {self.checks!r}")
            self.checks = [registry.get(c, owner="checks").name for c in self.checks]
            unchosen = [n for n in self.thresholds if n not in self.checks]
            if unchosen:
                raise UsageError(f"Threshold(s) {', '.join(unchosen)} given for check(s) not among checks "
                                 f"({', '.join(self.checks)}); add them to checks or drop their thresholds")
        if not isinstance(self.trust_remote_code, bool):
            raise UsageError(f"Expected trust_remote_code to be true or false in {owner} but got {self.trust_remote_code!r}")
        if self.ood_threshold_rule not in ("sun2022", "quantile"):
            raise UsageError(f"Expected ood_threshold_rule to be sun2022 or quantile in {owner} but got "
                             f"{self.ood_threshold_rule!r}")
        check_device(self.device, owner)
        check_dtype(self.dtype, owner)
        if self.engine not in ENGINES:
            raise UsageError(f"Expected engine to be one of {', '.join(ENGINES)} in {owner} but got {self.engine!r}")
        if self.workers is not None:
            check_positive_int(self.workers, "workers", owner)
        self.ray_connect_timeout = check_finite(self.ray_connect_timeout, "ray_connect_timeout", owner)
        if self.ray_connect_timeout <= 0:
            raise UsageError(f"The 'ray_connect_timeout' parameter of {owner} must be a number of seconds in the range "
                             f"(0, inf). Got {self.ray_connect_timeout:g} instead.")
        if self.gate not in GATE_MODES:
            raise UsageError(f"Expected gate to be one of {', '.join(GATE_MODES)} in {owner} but got {self.gate!r}")
        if self.pooling not in POOLINGS:
            raise UsageError(f"Expected pooling to be one of {', '.join(POOLINGS)} in {owner} but got {self.pooling!r}")
        if self.pooling == "cls" and task.pooling != "cls":
            # The paper's CLS vector, where the task has one; a decoder's first token embeds no text: the task's instead.
            self.pooling = task.pooling
        if not isinstance(self.sweep, list):
            raise UsageError(f"Expected sweep to be a list of K values in {owner} but got {self.sweep!r}")
        self.sweep = [check_positive_int(k, "sweep", owner) for k in self.sweep]
        self.attack = AttackSettings.parse(self.attack)


def find_pyproject(start: Path) -> Path | None:
    """The nearest pyproject.toml at or above ``start`` that has a [tool.miniature] table."""
    for directory in (start, *start.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file() and "miniature" in read_pyproject(candidate).get("tool", {}):
            return candidate
    return None


def read_pyproject(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"Could not read {path}: {exc}") from exc


def load_settings(pyproject: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    """Settings from ``[tool.miniature]`` of ``pyproject`` (if any), then ``overrides`` (non-None values win)."""
    table: dict[str, Any] = {}
    base_dir = Path.cwd()
    if pyproject is not None:
        table = dict(read_pyproject(pyproject).get("tool", {}).get("miniature", {}))
        base_dir = pyproject.parent
    known = {f.name for f in fields(Settings)} - {"base_dir"}
    unknown = set(table) - known
    if unknown:
        raise UsageError(
            f"Unknown key(s) {', '.join(sorted(unknown))} in [tool.miniature] of {pyproject}; "
            f"expected {', '.join(sorted(known))}"
        )
    if "cache_dir" in table:
        if not isinstance(table["cache_dir"], str):
            raise UsageError(f"Expected cache_dir in [tool.miniature] of {pyproject} to be a folder path (a string; "
                             f'"" for no cache) but got {table["cache_dir"]!r}')
        table["cache_dir"] = base_dir / table["cache_dir"] if table["cache_dir"] else None
    else:
        table["cache_dir"] = base_dir / ".miniature_cache"
    for key, value in (overrides or {}).items():
        if value is None or value == []:
            continue
        table[key] = value
    # Specs written in pyproject resolve against its folder; callers pass command-line specs
    # already parsed against the working directory.
    try:
        return Settings(**table, base_dir=base_dir)
    except TypeError as exc:  # pragma: no cover - guarded by the unknown-key check
        raise UsageError(str(exc)) from exc

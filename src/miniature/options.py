"""Command-line options, defined once for the pytest plugin and the ``miniature`` CLI.

The plugin spells most of them ``--miniature-<name>`` (pytest's option namespace is shared
by every plugin); the CLI spells them ``--<name>``. Both parse into the same ``dest`` and are
turned into :class:`~miniature.config.Settings` by :func:`resolve_settings`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ENGINES, GATE_MODES, POOLINGS, Settings, find_pyproject, load_settings
from .errors import UsageError
from .models.device import DTYPES


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1 but got {text!r}")
    return value


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number above 0 but got {text!r}")
    return value


@dataclass(frozen=True)
class Option:
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: The plugin's flag when it differs from --miniature-<name>.
    plugin_flag: str | None = None

    @property
    def dest(self) -> str:
        return "miniature_" + self.name.replace("-", "_")

    def flag(self, *, plugin: bool) -> str:
        return (self.plugin_flag or f"--miniature-{self.name}") if plugin else f"--{self.name}"


OPTIONS = (
    Option("reference", {"metavar": "SPEC", "help": "reference model: hf:<id or dir>, onnx:<file>, a path or an alias"},
           plugin_flag="--reference"),
    Option("candidate", {"action": "append", "default": [], "metavar": "SPEC",
                         "help": "candidate (compressed) model; repeat for several"}, plugin_flag="--candidate"),
    Option("eval", {"metavar": "SPEC", "help": "eval set: a csv/tsv/jsonl/json/parquet file, or name[:config]:split[slice]"}),
    Option("train", {"metavar": "SPEC", "help": "in-distribution training bank of the OOD check"}),
    Option("validation", {"metavar": "SPEC",
                          "help": "in-distribution validation set of the OOD check (default: a held-out tenth of the bank)"}),
    Option("ood", {"metavar": "SPEC", "help": "challenge set of the OOD check"}),
    Option("attack-set", {"metavar": "SPEC", "help": "labelled texts the adversarial-vulnerability check attacks"}),
    Option("attack-model", {"metavar": "SPEC", "help": "masked LM proposing BERT-Attack's substitutes (default bert-base)"}),
    Option("attack-examples", {"type": positive_int, "metavar": "N", "help": "attack only the first N examples"}),
    Option("attack-candidates", {"type": positive_int, "metavar": "K",
                                 "help": "substitutes per word (BERT-Attack's K; default 8, as TextAttack 0.3.11)"}),
    Option("attack-budget", {"type": positive_int, "metavar": "N", "help": "model queries allowed per attacked example"}),
    Option("checks", {"metavar": "NAME[,NAME...]",
                       "help": "the characteristics to run (default: those with thresholds, else every one whose data is "
                               "given); see 'miniature compare --help' for the names"}),
    Option("task", {"metavar": "TASK", "help": "task of the models under test: text-classification (default; "
                                               "question/context sets are read as extractive QA), question-answering, "
                                               "causal-lm, or a task a plugin adds"}),
    Option("pooling", {"choices": list(POOLINGS), "help": "embedding of the KNN and OOD checks (default cls)"}),
    Option("gate", {"choices": list(GATE_MODES),
                    "help": "gate on the point estimate (default) or on the lower end of its bootstrap 95%% interval"}),
    Option("doc-stride", {"type": positive_int, "metavar": "N",
                          "help": "QA: overlap of a long context's windows, in tokens (default min(128, max length / 2)); "
                                  "causal LMs: overlap of a long text's windows (default half a window)"}),
    Option("max-answer-length", {"type": positive_int, "metavar": "N", "help": "QA: longest answer span in tokens (default 30)"}),
    Option("null-threshold", {"type": float, "metavar": "X",
                              "help": "QA: answer nothing when the no-answer score beats the best span by more than X (default 0)"}),
    Option("batch-size", {"type": positive_int, "metavar": "N", "help": "inference batch size (default 32)"}),
    Option("logits-memory", {"type": positive_int, "metavar": "MB",
                              "help": "causal LMs: MB of logits a batch of windows may hold per model; sizes their "
                                      "batches (default 64)"}),
    Option("max-length", {"type": positive_int, "metavar": "N", "help": "truncate inputs to N tokens (default 256)"}),
    Option("device", {"metavar": "DEVICE",
                       "help": "where models run: auto (default: CUDA when torch sees one, else MPS, else CPU), cpu, cuda, cuda:N, mps"}),
    Option("dtype", {"choices": list(DTYPES), "help": "dtype transformers models are loaded in (default float32)"}),
    Option("engine", {"choices": list(ENGINES),
                       "help": "run forward passes and attacks in this process (local, default) or on a Ray cluster "
                               "(ray: RAY_ADDRESS, else a local Ray; needs pytest-miniature[ray])"}),
    Option("workers", {"type": positive_int, "metavar": "N",
                        "help": "Ray engine: actors per model (default: one per CPU of the cluster, per GPU on CUDA)"}),
    Option("ray-connect-timeout", {"type": positive_number, "metavar": "SECONDS",
                                   "help": "Ray engine: how long to try joining the cluster RAY_ADDRESS names before it "
                                           "is an error (default 60)"}),
    Option("cache-dir", {"metavar": "DIR", "help": "where model outputs are cached (default: .miniature_cache beside pyproject.toml)"}),
    Option("no-cache", {"action": "store_true", "help": "neither read nor write the output cache"}),
    Option("trust-remote-code", {"action": "store_true",
                                 "help": "let models run their own Python (config.json's auto_map); off by default"}),
    Option("report", {"metavar": "PATH", "help": "write the JSON report (schema pytest-miniature/report v1) to PATH"}),
    Option("markdown", {"metavar": "PATH",
                        "help": "write a Markdown summary to PATH (also appended to $GITHUB_STEP_SUMMARY when that is set)"}),
    Option("html", {"metavar": "PATH", "help": "write the HTML report, one self-contained page (verdict per candidate first, Figure 1 inline; needs matplotlib), to PATH"}),
    Option("save-baseline", {"metavar": "PATH", "help": "save this run's report as the baseline later runs compare with"}),
    Option("compare-baseline", {"metavar": "PATH", "help": "show how every result moved against a saved baseline report"}),
)


def add_options(adder: Any, *, plugin: bool) -> None:
    """Declare every option through ``adder`` (pytest's ``group.addoption`` or argparse's ``add_argument``)."""
    for option in OPTIONS:
        adder(option.flag(plugin=plugin), dest=option.dest, **option.kwargs)


def resolve_settings(values: Any, here: Path, *, inifile: Path | None = None) -> tuple[Settings, Path | None]:
    """Settings from [tool.miniature] and the parsed option ``values``; specs parsed and checked.

    The configuration is ``inifile`` (the file pytest itself uses) when that is a pyproject.toml
    with a [tool.miniature] table, else the nearest one at or above ``here`` (where the command
    was run), never one found from an option's value: a path given to ``--reference`` must not
    bring another project's gates, data and cache along. Specs from the command line resolve
    against ``here``; specs from pyproject.toml, against its folder. Raises :class:`UsageError`.
    """
    from .data.spec import parse_dataset_spec
    from .models.spec import parse_model_spec, unique_names

    get = lambda name: getattr(values, "miniature_" + name)  # noqa: E731
    if inifile is not None and inifile.name == "pyproject.toml" and find_pyproject(inifile.parent) == inifile:
        pyproject = inifile
    else:
        pyproject = find_pyproject(here)
    settings = load_settings(pyproject, {
        "task": get("task"), "batch_size": get("batch_size"), "logits_memory": get("logits_memory"),
        "max_length": get("max_length"),
        "pooling": get("pooling"), "gate": get("gate"), "doc_stride": get("doc_stride"),
        "max_answer_length": get("max_answer_length"), "null_threshold": get("null_threshold"),
        "cache_dir": Path(here, get("cache_dir")) if get("cache_dir") else None,
        "checks": get("checks"), "device": get("device"), "dtype": get("dtype"), "engine": get("engine"),
        "workers": get("workers"), "ray_connect_timeout": get("ray_connect_timeout"),
        "trust_remote_code": True if get("trust_remote_code") else None,
    })
    if get("no_cache"):
        settings.cache_dir = None
    aliases, base = settings.models, settings.base_dir
    if get("reference"):
        settings.reference = parse_model_spec(get("reference"), aliases=aliases, base_dir=here)
    elif settings.reference:
        settings.reference = parse_model_spec(settings.reference, aliases=aliases, base_dir=base)
    if get("candidate"):
        settings.candidates = [parse_model_spec(c, aliases=aliases, base_dir=here) for c in get("candidate")]
    else:
        settings.candidates = [parse_model_spec(c, aliases=aliases, base_dir=base) for c in settings.candidates]
    texts = [c.text for c in settings.candidates]
    duplicated = sorted({c.name for c in settings.candidates if texts.count(c.text) > 1})
    if duplicated:
        raise UsageError(f"Candidate(s) {', '.join(duplicated)} given more than once")
    models = unique_names([settings.reference, *settings.candidates])
    settings.reference, settings.candidates = models[0], models[1:]
    attack_model = get("attack_model")
    if attack_model and ":" not in attack_model and Path(here, attack_model).exists():
        attack_model = str(Path(here, attack_model))  # a relative path given on the command line
    settings.attack = settings.attack.replace(
        model=attack_model, examples=get("attack_examples"), max_candidates=get("attack_candidates"),
        query_budget=get("attack_budget"),
    )
    for key in ("eval", "train", "validation", "ood", "attack_set"):
        if get(key):
            setattr(settings, key, parse_dataset_spec(get(key), base_dir=here))
        elif getattr(settings, key):
            setattr(settings, key, parse_dataset_spec(getattr(settings, key), base_dir=base))
    return settings, pyproject

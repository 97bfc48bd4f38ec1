"""Model specs: the strings users write to name a model, parsed without importing any ML library.

Grammar::

    hf:<hub id or directory>[?quantize=int8&revision=<rev>]
    onnx:<file.onnx>[?tokenizer=<dir>&output=<name or index>&hidden=<name or index>&start=..&end=..]
    gguf:<file.gguf>[?tokenizer=<dir>&threads=<n>]   a causal LM run by llama.cpp (the gguf extra)
    either may add ?trust_remote_code=true|false: let this model run its own Python (config.json's auto_map)
    either may add ?task=text-classification|question-answering|causal-lm when the model's files do not say
    <alias>                 a built-in or [tool.miniature.models] name
    <directory> | <file.onnx> | <file.gguf> | <org>/<name>   the backend is inferred; a bare word must be an alias
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

from .. import tasks
from ..errors import UsageError
from .device import check_device, check_dtype

#: The paper's six BERT models (Table 1), by their Hugging Face Hub ids.
BUILTIN_ALIASES: dict[str, str] = {
    "bert-large": "hf:google-bert/bert-large-uncased",
    "bert-base": "hf:google-bert/bert-base-uncased",
    "distilbert": "hf:distilbert/distilbert-base-uncased",
    "bert-medium": "hf:google/bert_uncased_L-8_H-512_A-8",
    "bert-mini": "hf:google/bert_uncased_L-4_H-256_A-4",
    "tiny-bert": "hf:google/bert_uncased_L-2_H-128_A-2",
    # The same family fine-tuned for SQuAD 2.0 extractive QA (community checkpoints on the
    # hub; not reachable from this project's CI, so unverified here beyond their names).
    "bert-large-squad2": "hf:deepset/bert-large-uncased-whole-word-masking-squad2",
    "bert-base-squad2": "hf:deepset/bert-base-uncased-squad2",
    "distilbert-squad2": "hf:twmkn9/distilbert-base-uncased-squad2",
    "bert-medium-squad2": "hf:mrm8488/bert-medium-finetuned-squadv2",
    "bert-mini-squad2": "hf:mrm8488/bert-mini-finetuned-squadv2",
    "tiny-bert-squad2": "hf:mrm8488/bert-tiny-finetuned-squadv2",
}

BACKEND_OPTIONS: dict[str, frozenset[str]] = {
    "hf": frozenset({"quantize", "revision", "task", "device", "dtype", "trust_remote_code"}),
    "onnx": frozenset({"tokenizer", "output", "hidden", "task", "start", "end", "device", "trust_remote_code"}),
    "gguf": frozenset({"tokenizer", "threads", "task", "device"}),
}
#: The suffix of each backend's model file (a path with it needs no prefix).
_FILE_SUFFIXES = {".onnx": "onnx", ".gguf": "gguf"}
_FILE_BACKENDS = frozenset(_FILE_SUFFIXES.values())

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_QUANTIZE_VALUES = ("int8",)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec.

    ``location`` is an absolute path for local models and the hub id otherwise.
    ``name`` is what reports and test ids show.
    """

    text: str
    name: str
    backend: str
    location: str
    is_local: bool
    options: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    def __str__(self) -> str:
        return self.name


def parse_model_spec(
    text: str,
    *,
    aliases: dict[str, str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    _seen: tuple[str, ...] = (),
) -> ModelSpec:
    """Parse ``text`` into a :class:`ModelSpec`, checking that local paths exist.

    Relative paths resolve against ``base_dir`` (default: the working directory).
    Raises :class:`UsageError` naming the spec for anything malformed or missing.
    """
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"Expected a model spec (hf:<id or dir>, onnx:<file>, a path or an alias) but got {text!r}")
    text = text.strip()
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    all_aliases = {**BUILTIN_ALIASES, **(aliases or {})}

    if text in all_aliases:
        if text in _seen:
            raise UsageError(f"Model alias {text!r} refers to itself through {' -> '.join(_seen + (text,))}")
        resolved = parse_model_spec(all_aliases[text], aliases=aliases, base_dir=base_dir, _seen=_seen + (text,))
        return ModelSpec(text, text, resolved.backend, resolved.location, resolved.is_local, resolved.options)

    body, options = _split_options(text)
    backend, _, rest = body.partition(":")
    if backend in BACKEND_OPTIONS and rest:
        location = rest
    elif re.match(r"^[A-Za-z][\w+.-]*:", body) and not re.match(r"^[A-Za-z]:[\\/]", body):
        raise UsageError(
            f"Unknown model backend {backend!r} in model spec {text!r}: expected one of "
            f"hf:, onnx:, gguf:, a local path, or an alias ({', '.join(sorted(all_aliases))})"
        )
    else:
        location = body
        backend = _FILE_SUFFIXES.get(Path(body).suffix.lower(), "hf")

    unknown = set(options) - BACKEND_OPTIONS[backend]
    if unknown:
        raise UsageError(
            f"Unknown option(s) {', '.join(sorted(unknown))} in model spec {text!r}; "
            f"the {backend} backend takes {', '.join(sorted(BACKEND_OPTIONS[backend]))}"
        )
    if "task" in options and options["task"] not in tasks.names():  # what a model's files do not declare
        raise UsageError(f"Expected task={'|'.join(tasks.names())} in model spec {text!r} but got task={options['task']!r}")
    if "quantize" in options and options["quantize"] not in _QUANTIZE_VALUES:
        raise UsageError(
            f"Expected quantize={'|'.join(_QUANTIZE_VALUES)} in model spec {text!r} but got quantize={options['quantize']!r}"
        )
    if "trust_remote_code" in options:
        if options["trust_remote_code"].lower() not in ("true", "false"):
            raise UsageError(f"Expected trust_remote_code=true|false in model spec {text!r} but got "
                             f"trust_remote_code={options['trust_remote_code']!r}")
        options["trust_remote_code"] = options["trust_remote_code"].lower()
    if "device" in options:
        check_device(options["device"], f"model spec {text!r} (?device=)")
    if "dtype" in options:
        check_dtype(options["dtype"], f"model spec {text!r} (?dtype=)")
    if "threads" in options and not (options["threads"].isdigit() and int(options["threads"]) > 0):
        raise UsageError(f"Expected threads=<a positive whole number> in model spec {text!r} but got "
                         f"threads={options['threads']!r}")
    if "tokenizer" in options:
        tok = _resolve(options["tokenizer"], base)
        if not tok.is_dir():
            raise UsageError(f"Tokenizer directory {options['tokenizer']!r} of model spec {text!r} does not exist ({tok})")
        options["tokenizer"] = str(tok)

    path = _resolve(location, base)
    name = display_name(path, backend, options) if backend in _FILE_BACKENDS or path.exists() else text
    if backend in _FILE_BACKENDS:
        if not path.is_file():
            raise UsageError(f"{backend.upper()} model file {location!r} of model spec {text!r} does not exist ({path})")
        return ModelSpec(text, name, backend, str(path), True, options)
    if path.exists():
        if not path.is_dir():
            raise UsageError(
                f"Model path {location!r} of model spec {text!r} is a file; expected a model directory "
                f"(with config.json), an .onnx or a .gguf file"
            )
        if not (path / "config.json").is_file():
            raise UsageError(f"Model directory {location!r} of model spec {text!r} has no config.json ({path})")
        return ModelSpec(text, name, backend, str(path), True, options)
    if _looks_like_path(location) or not _HUB_ID.match(location):
        raise UsageError(f"Model path {location!r} of model spec {text!r} does not exist ({path})")
    if "/" not in location and not body.startswith("hf:"):
        # A bare word is far more often a mistyped alias than a root-level hub model.
        raise UsageError(
            f"Unknown model alias {text!r}: it is not an alias ({', '.join(sorted(all_aliases))}) nor an "
            f"existing path ({path}); for a hub model write hf:{location} or <org>/<name>"
        )
    return ModelSpec(text, name, backend, location, False, options)


def display_name(path: Path, backend: str, options: dict[str, str]) -> str:
    """A short name for a local model: its folder's name (an ONNX file: ``folder/file.onnx``), with the spec's
    options, which change what it computes. Full paths made tables 250 columns wide; the report's legend and
    its ``models`` keep the specs. Two models that would share a name are told apart by the session."""
    short = f"{path.parent.name}/{path.name}" if backend in _FILE_BACKENDS else path.name
    shown = {k: v for k, v in options.items() if k != "tokenizer"}
    return short + ("?" + "&".join(f"{k}={v}" for k, v in shown.items()) if shown else "")


def unique_names(specs: list[ModelSpec | None]) -> list[ModelSpec | None]:
    """``specs`` with display names made unique: where two different models share a name (the alias ``m``
    and the folder ``./m``), each later one is shown by its full spec, so no two rows or report entries merge."""
    from dataclasses import replace

    seen: dict[str, str] = {}
    out = []
    for spec in specs:
        if spec is not None and spec.name in seen and seen[spec.name] != spec.text:
            spec = replace(spec, name=spec.text)
        if spec is not None:
            seen.setdefault(spec.name, spec.text)
        out.append(spec)
    return out


def _split_options(text: str) -> tuple[str, dict[str, str]]:
    body, sep, query = text.partition("?")
    if not sep:
        return body, {}
    pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False)
    if not pairs or any(not k or not v for k, v in pairs):
        raise UsageError(f"Expected options of the form ?key=value&key=value in model spec {text!r} but got ?{query}")
    return body, dict(pairs)


def _resolve(location: str, base: Path) -> Path:
    path = Path(os.path.expanduser(location))
    return (path if path.is_absolute() else base / path).resolve()


def _looks_like_path(location: str) -> bool:
    return location.startswith((".", "/", "~", "\\")) or location.count("/") > 1 or os.sep != "/" and os.sep in location

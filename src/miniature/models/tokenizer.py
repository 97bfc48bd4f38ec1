"""A tokenizer's identity as data: its vocabulary (token to id), merges and special tokens.

Two models can be compared token by token only when their tokenizers map text to the same ids. That is
a property of what the files say, not of their bytes: a tokenizer.json re-indented or with its keys in
another order is the same tokenizer. Read from the files alone (no tokenizer library is loaded).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TokenizerIdentity:
    """What decides a tokenizer's ids: ``vocabulary`` (id -> token), ``merges`` (BPE rules, in order),
    ``special`` (special token -> id), and the digest of any binary model (sentencepiece). ``source``: ``"files"``
    (HF tokenizer files) or ``"gguf"`` (a GGUF's own vocabulary, which records merges but marks special tokens in
    its own way and has no sentencepiece file)."""

    vocabulary: dict[int, str]
    merges: tuple[tuple[str, ...], ...]
    special: dict[str, int]
    binary: str | None = None
    source: str = "files"

    def same_ids(self, other: TokenizerIdentity) -> bool:
        """Whether the two map text to the same ids. Between HF files, everything counts; with a GGUF's vocabulary on
        either side, the tokens id by id and the merges where both record them (what both formats say alike)."""
        if self.source == other.source == "files":
            return self == other
        both_merge = bool(self.merges) and bool(other.merges)
        return self.vocabulary == other.vocabulary and (not both_merge or self.merges == other.merges)

    def differs(self, other: TokenizerIdentity) -> str:
        """Where ``other`` first differs from this one, in words ("" when they are the same)."""
        for i in sorted(set(self.vocabulary) | set(other.vocabulary)):
            mine, theirs = self.vocabulary.get(i), other.vocabulary.get(i)
            if mine != theirs:
                return f"token id {i} is {_said(mine)} in the first and {_said(theirs)} in the second"
        if self.merges != other.merges and (self.source == other.source == "files" or self.merges and other.merges):
            at = next((i for i, (a, b) in enumerate(zip(self.merges, other.merges)) if a != b),
                      min(len(self.merges), len(other.merges)))
            return f"their merge rules differ from rule {at}"
        if self.source != other.source:
            return ""
        if self.special != other.special:
            name = sorted(set(self.special.items()) ^ set(other.special.items()))[0][0]
            return f"their special token {name!r} differs"
        if self.binary != other.binary:
            return "their sentencepiece models differ"
        return ""


def _said(token: str | None) -> str:
    return "absent" if token is None else repr(token)


def tokenizer_identity(directory: Path) -> TokenizerIdentity | None:
    """The identity of the tokenizer whose files are in ``directory``; None when it has no vocabulary file."""
    directory = Path(directory)
    vocabulary: dict[int, str] = {}
    merges: tuple[tuple[str, ...], ...] = ()
    special: dict[str, int] = {}
    binary = None
    found = False
    fast = directory / "tokenizer.json"
    if fast.is_file():
        data = _json(fast)
        model = data.get("model") or {}
        vocab = model.get("vocab")
        if isinstance(vocab, dict):  # BPE and WordPiece: token -> id
            vocabulary = {int(i): str(t) for t, i in vocab.items()}
        elif isinstance(vocab, list):  # Unigram: [piece, score] in id order
            vocabulary = {i: str(entry[0]) for i, entry in enumerate(vocab)}
        merges = tuple(_merge(m) for m in model.get("merges") or ())
        for added in data.get("added_tokens") or ():
            vocabulary[int(added["id"])] = str(added["content"])
            if added.get("special"):
                special[str(added["content"])] = int(added["id"])
        found = True
    else:
        if (directory / "vocab.txt").is_file():  # WordPiece: one token a line, the line number its id
            lines = (directory / "vocab.txt").read_text(encoding="utf-8").split("\n")
            vocabulary = {i: t for i, t in enumerate(lines[:-1] if lines and lines[-1] == "" else lines)}
            found = True
        if (directory / "vocab.json").is_file():
            vocabulary = {int(i): str(t) for t, i in _json(directory / "vocab.json").items()}
            found = True
        if (directory / "merges.txt").is_file():
            rules = (directory / "merges.txt").read_text(encoding="utf-8").splitlines()
            merges = tuple(tuple(r.split()) for r in rules if r.strip() and not r.startswith("#version"))
        if (directory / "added_tokens.json").is_file():
            for token, i in _json(directory / "added_tokens.json").items():
                vocabulary[int(i)] = str(token)
    for name in ("spiece.model", "sentencepiece.bpe.model", "tokenizer.model"):
        if (directory / name).is_file():
            binary = hashlib.sha256((directory / name).read_bytes()).hexdigest()
            found = True
    if not found:
        return None
    if not fast.is_file() and (directory / "special_tokens_map.json").is_file():
        inverse = {t: i for i, t in vocabulary.items()}
        for value in _json(directory / "special_tokens_map.json").values():
            for token in value if isinstance(value, list) else [value]:
                content = token.get("content") if isinstance(token, dict) else token
                if isinstance(content, str) and content in inverse:
                    special[content] = inverse[content]
    return TokenizerIdentity(vocabulary, merges, special, binary)


def _merge(rule: Any) -> tuple[str, ...]:
    return tuple(rule.split(" ")) if isinstance(rule, str) else tuple(map(str, rule))


def _json(path: Path) -> Any:
    from ..errors import ModelLoadError

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"The tokenizer file {path} is not readable JSON ({exc})") from exc

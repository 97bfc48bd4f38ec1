"""llama.cpp's own tokenizer for a GGUF that comes without HF tokenizer files, in the shape the tasks call.

transformers can convert a GGUF's vocabulary into a fast tokenizer, but the conversion is its own reading of the
metadata (on SmolLM2-135M-Instruct it starts every text with a BOS token the file says not to add, and it takes
15 s); llama.cpp's ``llama_tokenize`` is what llama.cpp itself, and its perplexity tool, feed the model. Loading the
vocabulary alone (``vocab_only``) takes no weights.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError


class LlamaCppTokenizer:
    """Texts to token ids and back with llama.cpp: special tokens added as the file says (``add_bos_token``), none
    parsed out of the text (a text is data), as llama.cpp's perplexity tool tokenizes."""

    def __init__(self, path: Path, tokens: Sequence[str], context: int | None, name: str) -> None:
        from .llama_cpp_runtime import llama_cpp_module, logged

        self._llama = llama_cpp_module()
        params = self._llama.llama_model_default_params()
        params.vocab_only = True
        logged.clear()
        self._model = self._llama.llama_model_load_from_file(str(path).encode(), params)
        if not self._model:
            raise ModelLoadError(f"llama.cpp could not read the vocabulary of GGUF model {name!r} ({path}): "
                                 f"{' | '.join(list(logged)[-4:]) or 'no reason logged'}")
        self._vocab = self._llama.llama_model_get_vocab(self._model)
        self._tokens = list(tokens)
        self.model_max_length = context or 10**30
        special = lambda token: token if token >= 0 else None  # noqa: E731 - llama.cpp says -1 for "none"
        self.bos_token_id = special(self._llama.llama_vocab_bos(self._vocab))
        self.eos_token_id = special(self._llama.llama_vocab_eos(self._vocab))
        self.pad_token_id = special(self._llama.llama_vocab_pad(self._vocab))
        self._added = len(self.encode(""))

    def encode(self, text: str) -> list[int]:
        data = text.encode("utf-8")
        room = len(data) + 8
        while True:
            out = (self._llama.llama_token * room)()
            count = self._llama.llama_tokenize(self._vocab, data, len(data), out, room, True, False)
            if count >= 0:
                return list(out[:count])
            room = -count

    def __call__(self, texts: Sequence[str] | str, *, truncation: bool = False, max_length: int | None = None,
                 padding: bool = False, **_: Any) -> dict[str, list]:
        single = isinstance(texts, str)
        ids = [self.encode(t) for t in ([texts] if single else texts)]
        if truncation and max_length is not None:
            ids = [row[:max_length] for row in ids]
        encoded = {"input_ids": ids, "attention_mask": [[1] * len(row) for row in ids]}
        return {k: v[0] for k, v in encoded.items()} if single else encoded

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False, **_: Any) -> str:
        ids = [int(i) for i in ids]
        tokens = (self._llama.llama_token * max(1, len(ids)))(*ids)
        room = 8 * len(ids) + 16
        while True:
            out = ctypes.create_string_buffer(room)
            count = self._llama.llama_detokenize(self._vocab, tokens, len(ids), out, room, skip_special_tokens, False)
            if count >= 0:
                return out.raw[:count].decode("utf-8", "replace")
            room = -count

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return self._added

    def get_vocab(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self._tokens)}

    def __len__(self) -> int:
        return len(self._tokens)

    def __del__(self) -> None:
        try:
            if self._model:
                self._llama.llama_model_free(self._model)
        except Exception:
            pass

"""llama.cpp backend: a GGUF file (``gguf:<file.gguf>`` or a path ending in ``.gguf``) run by llama.cpp's own kernels.

The binding is llama-cpp-python's C API (``pip install 'pytest-miniature[gguf]'``, built from source): it is the only
binding on the package registry that hands back the full vocabulary of logits for every position of a prompt, as a
pointer to llama.cpp's own output buffer (xllamacpp's wheel wraps llama.cpp's server, whose completions return at
most ``n_probs`` top tokens as JSON; see ``docs/causal-lm.md``). Each window is one ``llama_decode`` of its own (see
:meth:`GGUFBackend.runs_alone`) in which every token asks for its logits (and, where the run reads embeddings, its
last hidden state after the final norm, the same tensor transformers' ``hidden_states[-1]`` is).

The file's metadata (architecture, context, vocabulary, the types of its tensors) is read from its header
(:mod:`.gguf_header`) without loading the weights, so a truncated or foreign file is refused before llama.cpp sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelLoadError, UsageError
from .base import Backend
from .llama_cpp_runtime import binding_version, gpu_offload, llama_cpp_module, logged, threads_default

#: llama.cpp's token types (llama_token_type): what a vocabulary entry is.
_CONTROL = 3


@dataclass(frozen=True)
class GGUFFacts:
    """What a GGUF file says about itself: enough to place, key and check it before loading the weights."""

    architecture: str
    context: int | None
    tokens: tuple[str, ...]
    token_types: tuple[int, ...]
    merges: tuple[str, ...]
    file_type: str
    tensor_types: dict[str, int]
    parameters: int


def read_facts(path: Path) -> GGUFFacts:
    """The metadata of GGUF file ``path``; a file gguf cannot read whole (truncated, not GGUF) is a model error."""
    try:
        import gguf
    except ImportError as exc:
        raise ModelLoadError(f"Reading GGUF model {path} needs the gguf extra: pip install 'pytest-miniature[gguf]' "
                             f"({exc})") from exc
    from .gguf_header import read_header

    try:
        fields, tensors = read_header(path)

        def value(key: str, default: Any = None) -> Any:
            return fields.get(key, default)

        architecture = value("general.architecture")
        if not isinstance(architecture, str):
            raise ValueError("it has no general.architecture")
        tensor_types: dict[str, int] = {}
        for tensor in tensors:
            kind = gguf.GGMLQuantizationType(tensor.kind).name
            tensor_types[kind] = tensor_types.get(kind, 0) + 1
        file_type = value("general.file_type")
        return GGUFFacts(
            architecture=architecture, context=value(f"{architecture}.context_length"),
            tokens=tuple(value("tokenizer.ggml.tokens", [])), token_types=tuple(value("tokenizer.ggml.token_type", [])),
            merges=tuple(value("tokenizer.ggml.merges", [])),
            file_type=_file_type_name(file_type) if file_type is not None else max(tensor_types, key=tensor_types.get),
            tensor_types=tensor_types, parameters=sum(t.elements for t in tensors))
    except ModelLoadError:
        raise
    except Exception as exc:  # ValueError, struct.error, KeyError (an unknown tensor type)... on a damaged file
        raise ModelLoadError(f"{path} is not a readable GGUF file (truncated or damaged?): {type(exc).__name__}: "
                             f"{str(exc)[:300]}") from exc


def _file_type_name(file_type: int) -> str:
    """llama.cpp's name for a ``general.file_type`` (LLAMA_FTYPE_MOSTLY_Q4_K_M -> Q4_K_M)."""
    try:
        import gguf

        return gguf.LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except (ValueError, ImportError):
        return f"file type {file_type}"


def gguf_identity(facts: GGUFFacts):
    """The tokenizer identity of a GGUF's own vocabulary (``tokenizer.ggml.tokens`` and merges): compared token by
    token with an HF tokenizer's (see :func:`miniature.models.tokenizer.tokenizer_identity`)."""
    from .tokenizer import TokenizerIdentity

    special = {t: i for i, (t, kind) in enumerate(zip(facts.tokens, facts.token_types)) if kind == _CONTROL}
    return TokenizerIdentity(dict(enumerate(facts.tokens)), tuple(tuple(m.split(" ")) for m in facts.merges), special,
                             source="gguf")


class GGUFBackend(Backend):
    """Runs ``gguf:<file>``. Its tokenizer: ``?tokenizer=<dir>``, else the HF tokenizer files beside the file (as
    ``miniature compress gguf`` writes them), both checked token by token against the vocabulary in the file; else
    llama.cpp's own tokenizer of the file's vocabulary (:mod:`.gguf_tokenizer`)."""

    #: In a pair, it reads the ids its pair's tokenizer makes (the vocabularies are compared id by id first).
    takes_reference_ids = True
    alone_because = "llama.cpp picks its matmul kernels by the tokens in a decode: batch-mates would change its outputs"

    def runs_alone(self) -> bool:
        """Each window is decoded alone: llama.cpp's CPU backend chooses how to multiply by the number of tokens in a
        decode (quantizing activations, repacked kernels), so a text's logits moved with its batch-mates: on
        SmolLM2-135M Q8_0, six SST-2 sentences decoded together against each alone differed by a KL of 0.004 nats
        (half the Q8_0 file's drift from its F16, 0.008), F16 by 5e-6. Alone, a window's outputs depend on its own
        tokens only, so :meth:`forward` decodes every row alone."""
        return True

    def __init__(self, spec: Any) -> None:
        self.model_file = Path(spec.location)
        super().__init__(spec, Path(spec.options.get("tokenizer", self.model_file.parent)))
        self._facts: GGUFFacts | None = None
        self._model = self._context = None
        self._capacity = 0  # tokens the context holds
        self.tokens_decoded, self.seconds_decoding = 0, 0.0

    # What the file says -------------------------------------------------------------------------------------------
    @property
    def facts(self) -> GGUFFacts:
        if self._facts is None:
            self._facts = read_facts(self.model_file)
        return self._facts

    def _read_config(self) -> dict:
        """A config in transformers' terms, from the file's metadata: what windows and batches are sized by."""
        facts = self.facts
        return {"model_type": facts.architecture, "architectures": [f"{facts.architecture.capitalize()}ForCausalLM"],
                "vocab_size": len(facts.tokens) or None, "max_position_embeddings": facts.context}

    def _tokenizer_files_dir(self) -> Path | None:
        """The folder of HF tokenizer files run with the model: ``?tokenizer=``, else the file's own folder if it has them."""
        from .fingerprint import VOCABULARY_FILES

        if "tokenizer" in self.spec.options:
            return self.local_dir
        return self.local_dir if any((self.local_dir / n).is_file() for n in VOCABULARY_FILES) else None

    def files(self) -> list[Path]:
        from .fingerprint import TOKENIZER_FILES

        folder = self._tokenizer_files_dir()
        return [self.model_file, *([folder / n for n in TOKENIZER_FILES if (folder / n).is_file()] if folder else [])]

    def tokenizer_identity(self):
        return gguf_identity(self.facts)

    def size(self) -> dict[str, float | int | None]:
        return {"megabytes": round(self.model_file.stat().st_size / 1e6, 3), "parameters": self.facts.parameters}

    def facts_for_report(self) -> dict[str, Any]:
        """The file's quantization (llama.cpp's file type and how many tensors each type holds) and the measured
        tokens per second of its forward passes."""
        rate = round(self.tokens_decoded / self.seconds_decoding, 1) if self.seconds_decoding > 0 else None
        return {"gguf": {"file_type": self.facts.file_type, "tensor_types": dict(sorted(self.facts.tensor_types.items())),
                         "tokens_per_second": rate, "threads": self.threads()}}

    def placement(self):
        from .device import Placement

        # the binding's version names the llama.cpp it vendors, whose kernels computed the outputs (a cache key part)
        device = self.device if self.device.startswith("cuda") and gpu_offload() else "cpu"
        return Placement(device, "gguf", f"llama.cpp (llama-cpp-python {binding_version()})")

    def cpu_only(self) -> bool:
        return not gpu_offload()

    def threads(self) -> int:
        return int(self.spec.options.get("threads") or threads_default())

    def load_options(self) -> dict[str, str]:
        # threads split each matmul's rows between them, not its sums: 1 and 2 threads gave the same logits to the bit
        # (SmolLM2 Q8_0 and Q4_K_M, the tests' Q4_0), so they are not part of the cache key
        return {k: v for k, v in super().load_options().items() if k != "threads"}

    # Loading ------------------------------------------------------------------------------------------------------
    def load_tokenizer(self) -> None:
        folder = self._tokenizer_files_dir()
        if folder is None:  # the file's own vocabulary, tokenized by llama.cpp
            from .gguf_tokenizer import LlamaCppTokenizer

            self.tokenizer = LlamaCppTokenizer(self.model_file, self.facts.tokens, self.facts.context, self.spec.name)
            return
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
        except Exception as exc:
            said = " ".join(str(exc).split())
            raise ModelLoadError(f"GGUF model {self.spec.name!r}: no tokenizer loaded from the tokenizer files in {folder} "
                                 f"({type(exc).__name__}: {said[:300]}); give the tokenizer the model was converted from "
                                 f"(?tokenizer=<dir>), or none to use the file's own vocabulary") from exc
        self._check_vocabulary(folder)

    def _check_vocabulary(self, folder: Path) -> None:
        """HF tokenizer files must map text to the ids the file's vocabulary means: compared token by token, as a
        pair's tokenizers are (:class:`~miniature.models.tokenizer.TokenizerIdentity`)."""
        from .tokenizer import tokenizer_identity

        files, own = tokenizer_identity(folder), self.tokenizer_identity()
        if files is None or not own.same_ids(files):
            said = own.differs(files) if files is not None else "the folder has no vocabulary file"
            raise ModelLoadError(f"GGUF model {self.spec.name!r}: its vocabulary (tokenizer.ggml.tokens, the first) and the "
                                 f"tokenizer in {folder} (the second) differ: {said}; give the tokenizer the model was "
                                 f"converted from (?tokenizer=<dir>)")

    def load(self, run: Any, declared: Any) -> None:
        if declared is None or not run.reads_head_of(declared):
            raise UsageError(f"GGUF model {self.spec.name!r} is a causal language model run by llama.cpp; only "
                             f"task = \"causal-lm\" reads it (this run's task is {run.name!r})")
        self.task = declared
        self.load_tokenizer()
        llama_cpp = llama_cpp_module()
        if self.device.startswith(("cuda", "mps")) and not gpu_offload():
            raise UsageError(f"GGUF model {self.spec.name!r} was to run on {self.device}, but this llama-cpp-python was "
                             f"built for the CPU only; give it ?device=cpu or build llama-cpp-python with GPU support")
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 999 if self.device.startswith(("cuda", "mps")) else 0
        logged.clear()
        model = llama_cpp.llama_model_load_from_file(str(self.model_file).encode(), params)
        if not model:
            raise ModelLoadError(f"llama.cpp could not load GGUF model {self.spec.name!r} ({self.model_file}): "
                                 f"{' | '.join(list(logged)[-4:]) or 'no reason logged'}")
        self._model = model
        vocabulary = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
        if vocabulary != len(self.facts.tokens):
            raise ModelLoadError(f"GGUF model {self.spec.name!r}: llama.cpp reads {vocabulary} tokens where the file's "
                                 f"metadata lists {len(self.facts.tokens)}")
        self.n_vocab, self.n_embd = vocabulary, llama_cpp.llama_model_n_embd(model)
        self.loaded = True

    def _context_for(self, tokens: int) -> Any:
        """A context for one sequence of ``tokens`` tokens (made anew when a window is longer than any before)."""
        llama_cpp = llama_cpp_module()
        if self._context is not None and tokens <= self._capacity:
            return self._context
        if self._context is not None:
            llama_cpp.llama_free(self._context)
            self._context = None
        size = max(tokens, self._capacity, 64)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = size  # a window is one decode, one micro-batch
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = self.threads()
        params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_NONE
        params.embeddings = False
        logged.clear()
        context = llama_cpp.llama_init_from_model(self._model, params)
        if not context:
            raise ModelLoadError(f"llama.cpp could not make a context of {size} tokens for GGUF model {self.spec.name!r}: "
                                 f"{' | '.join(list(logged)[-4:]) or 'no reason logged'}")
        self._context, self._capacity = context, size
        return context

    # Running ------------------------------------------------------------------------------------------------------
    def forward(self, batch: dict[str, np.ndarray], need_hidden: bool = True) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The logits (rows, tokens, vocabulary) and, with ``need_hidden``, last hidden states of a right-padded batch,
        each row decoded alone (see :meth:`runs_alone`)."""
        import time

        ids = np.asarray(batch["input_ids"])
        mask = batch.get("attention_mask")
        lengths = (np.asarray(mask).sum(axis=1) if mask is not None else np.full(len(ids), ids.shape[1])).astype(int)
        logits = np.zeros((*ids.shape, self.n_vocab), dtype=np.float32)
        hidden = np.zeros((*ids.shape, self.n_embd), dtype=np.float32) if need_hidden else None
        started = time.perf_counter()
        for row, n in enumerate(lengths):
            if n:
                self._decode(ids[row, :n], logits[row], None if hidden is None else hidden[row])
        self.seconds_decoding += time.perf_counter() - started
        self.tokens_decoded += int(lengths.sum())
        return logits, hidden

    def _decode(self, tokens: np.ndarray, logits: np.ndarray, hidden: np.ndarray | None) -> None:
        """One sequence through ``llama_decode``, every position's logits (and last hidden state) into the arrays."""
        llama_cpp = llama_cpp_module()
        n = len(tokens)
        context = self._context_for(n)
        llama_cpp.llama_set_embeddings(context, hidden is not None)
        batch = llama_cpp.llama_batch_init(n, 0, 1)
        try:
            np.ctypeslib.as_array(batch.token, shape=(n,))[:] = tokens
            np.ctypeslib.as_array(batch.pos, shape=(n,))[:] = np.arange(n)
            np.ctypeslib.as_array(batch.n_seq_id, shape=(n,))[:] = 1
            np.ctypeslib.as_array(batch.logits, shape=(n,))[:] = 1
            for i in range(n):
                batch.seq_id[i][0] = 0
            batch.n_tokens = n
            status = llama_cpp.llama_decode(context, batch)
            if status != 0:
                raise ModelLoadError(f"llama.cpp failed to decode a window of {n} tokens of GGUF model "
                                     f"{self.spec.name!r} (llama_decode returned {status}): "
                                     f"{' | '.join(list(logged)[-3:]) or 'no reason logged'}")
            logits[:n] = np.ctypeslib.as_array(llama_cpp.llama_get_logits(context), shape=(n, self.n_vocab))
            if hidden is not None:
                hidden[:n] = np.ctypeslib.as_array(llama_cpp.llama_get_embeddings(context), shape=(n, self.n_embd))
        finally:
            llama_cpp.llama_batch_free(batch)
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(context), True)

    def __del__(self) -> None:  # free llama.cpp's buffers with the backend (tests open many)
        try:
            import llama_cpp

            if getattr(self, "_context", None) is not None:
                llama_cpp.llama_free(self._context)
            if getattr(self, "_model", None) is not None:
                llama_cpp.llama_model_free(self._model)
        except Exception:
            pass

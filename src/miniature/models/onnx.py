"""ONNX Runtime backend: an exported graph plus the tokenizer it was exported with."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ModelLoadError
from .base import Backend, task_of
from .device import intra_op_threads, onnx_providers
from .fingerprint import onnx_files

_INPUT_DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


class OnnxBackend(Backend):
    """Runs ``onnx:<file>``; the tokenizer comes from the file's folder or ``?tokenizer=``."""

    def __init__(self, spec) -> None:
        self.model_file = Path(spec.location)
        # local_dir is where tokenizer and config.json live.
        super().__init__(spec, Path(spec.options.get("tokenizer", self.model_file.parent)))
        self.tokenizer_dir = self.local_dir
        self.session = None

    def placement(self):
        """The device asked for, the graph's own dtype, and the execution provider onnxruntime put first (the
        one that ran it; CPU when onnxruntime-gpu is not installed, whatever the device)."""
        from .device import Placement

        if self.session is not None:
            provider = self.session.get_providers()[0]
        else:  # before load: the provider it will get
            first = onnx_providers(self.device)[0]
            provider = first[0] if isinstance(first, tuple) else first
        device = self.device if provider == "CUDAExecutionProvider" else "cpu"
        return Placement(device, "graph", provider)

    def model_task(self) -> str | None:
        declared = super().model_task()
        if declared is None and self.session is not None:
            if getattr(self, "causal", False):
                return "causal-lm"
            return "question-answering" if self.qa else ("text-classification" if self.logits_name else None)
        return declared

    def files(self) -> list[Path]:
        return onnx_files(self.model_file, self.tokenizer_dir)

    def tokenizer_files(self) -> list[Path]:
        from .fingerprint import VOCABULARY_FILES

        return [self.tokenizer_dir / n for n in VOCABULARY_FILES if (self.tokenizer_dir / n).is_file()]

    def load_tokenizer(self) -> None:
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir, trust_remote_code=self.trust_remote_code)
        except Exception as exc:
            # The fix first: transformers' own message can run to thousands of characters (every model type).
            said = " ".join(str(exc).split())
            raise ModelLoadError(
                f"ONNX model {self.spec.name!r} needs its tokenizer: put the tokenizer files (tokenizer.json, "
                f"tokenizer_config.json, ...) beside the .onnx file or pass ?tokenizer=<dir> in the spec. None loaded "
                f"from {self.tokenizer_dir} ({type(exc).__name__}: {said[:200]}{'...' if len(said) > 200 else ''})"
            ) from exc

    def load(self, task: str) -> None:
        import onnxruntime

        self.load_tokenizer()
        try:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = intra_op_threads()
            self.session = onnxruntime.InferenceSession(str(self.model_file), options,
                                                        providers=onnx_providers(self.device))
        except Exception as exc:
            raise ModelLoadError(
                f"ONNX Runtime could not load {self.model_file} (model spec {self.spec.text!r}): {exc}"
            ) from exc
        asked = onnx_providers(self.device)[0]
        if isinstance(asked, tuple) and self.session.get_providers()[0] != asked[0]:
            raise ModelLoadError(
                f"ONNX model {self.spec.name!r} was to run on {self.device} with {asked[0]}, but onnxruntime fell back to "
                f"{self.session.get_providers()[0]} (its CUDA libraries did not load); fix the CUDA install or run it "
                f"with ?device=cpu")
        self.inputs = {i.name: _INPUT_DTYPES.get(i.type, np.int64) for i in self.session.get_inputs()}
        outputs = self.session.get_outputs()
        names = {o.name for o in outputs}
        options = self.spec.options
        self.qa = options.get("task") == "question-answering" or (
            "task" not in options and {"start_logits", "end_logits"} <= names)
        if self.qa:  # start and end logits, (batch, tokens) each, stacked into (batch, tokens, 2)
            self.start_name = _choose(outputs, options.get("start"), "start_logits", 2, self.spec.text, "start")
            self.end_name = _choose(outputs, options.get("end"), "end_logits", 2, self.spec.text, "end")
            if self.start_name is None or self.end_name is None or self.start_name == self.end_name:
                described = ", ".join(f"{o.name} {o.shape}" for o in outputs)
                raise ModelLoadError(
                    f"ONNX model {self.spec.name!r} is a question-answering model but has no distinct start and end "
                    f"logits outputs (outputs: {described}); name them with ?start=<name or index>&end=<name or index>"
                )
        # A causal LM's logits are (batch, tokens, vocabulary): rank 3, like the hidden states beside them.
        self.causal = task == "causal-lm" and not self.qa
        if self.causal:
            self.logits_name = _choose(outputs, options.get("output"), "logits", 3, self.spec.text, "output")
        else:
            self.logits_name = None if self.qa else self._logits_output(outputs)
        others = [o for o in outputs if o.name != self.logits_name] if self.causal else outputs
        self.hidden_name = _choose(others, self.spec.options.get("hidden"), "last_hidden_state", 3, self.spec.text, "hidden")
        if self.logits_name is None and self.hidden_name is None and not self.qa:
            raise ModelLoadError(
                f"ONNX model {self.spec.name!r} has neither classification logits (a float (batch, labels) output of "
                f"a model whose config.json declares a classifier) nor hidden states (a float (batch, tokens, hidden) "
                f"output); its outputs are {_describe(outputs)}: name them with ?output=<name or index> and "
                f"?hidden=<name or index>"
            )
        self.loaded = True

    def forward(self, batch: dict[str, np.ndarray], need_hidden: bool = True) -> tuple[np.ndarray | None, np.ndarray | None]:
        if getattr(self, "causal", False) and "position_ids" in self.inputs and "position_ids" not in batch:
            # Decoder exports (Optimum's Llama, Mistral, Qwen) take positions; batches are right-padded, so 0, 1, 2 ...
            mask = batch.get("attention_mask", np.ones_like(batch["input_ids"]))
            batch = {**batch, "position_ids": np.clip(np.cumsum(mask, axis=1) - 1, 0, None)}
        past = [name for name in self.inputs if name.startswith("past_key_values")]
        if past:
            raise ModelLoadError(f"ONNX model {self.spec.name!r} takes a key/value cache ({past[0]}, ...): export it "
                                 f"without one (optimum-cli export onnx --task text-generation, not text-generation-with-past)")
        missing = [name for name in self.inputs if name not in batch]
        if missing:
            raise ModelLoadError(
                f"ONNX model {self.spec.name!r} needs input(s) {', '.join(missing)} that its tokenizer "
                f"does not produce (it produces {', '.join(batch)})"
            )
        feed = {name: batch[name].astype(dtype) for name, dtype in self.inputs.items() if name in batch}
        if self.qa:
            names = [self.start_name, self.end_name, *([self.hidden_name] if need_hidden and self.hidden_name else [])]
            results = dict(zip(names, self.session.run(names, feed)))
            logits = np.stack([results[self.start_name], results[self.end_name]], axis=-1)
            return logits, results.get(self.hidden_name)
        wanted = (self.logits_name, self.hidden_name if need_hidden or self.logits_name is None else None)
        names = [n for n in wanted if n is not None]
        results = dict(zip(names, self.session.run(names, feed)))
        return results.get(self.logits_name), results.get(self.hidden_name)


    def _logits_output(self, outputs) -> str | None:
        """The classification logits: ``?output=``, else a float (batch, labels) output, and only when the
        model has a classification head (a sentence encoder's pooled (batch, hidden) output is no logits)."""
        requested = self.spec.options.get("output")
        if requested is not None:
            return _choose(outputs, requested, "logits", 2, self.spec.text, "output")
        config = self.config()
        labels = len(config["id2label"]) if isinstance(config.get("id2label"), dict) else config.get("num_labels")
        declared = self.spec.options.get("task") == "text-classification" or task_of(config) == "text-classification"
        candidates = [o for o in outputs if _is_float(o) and _rank(o) == 2]
        if not declared and any(o.name == "logits" for o in candidates) and config.get("architectures") is None:
            declared = True  # no config to say otherwise: an output named logits is taken at its word
        if not declared:
            return None
        named = [o for o in candidates if o.name == "logits"]
        sized = [o for o in candidates if isinstance(labels, int) and o.shape[1] == labels]
        for choice in (named, sized, candidates if len(candidates) == 1 else []):
            if choice:
                return choice[0].name
        raise ModelLoadError(
            f"ONNX model {self.spec.name!r} declares a classifier ({labels} labels) but no output can be its logits "
            f"(a float (batch, {labels}) output); its outputs are {_describe(outputs)}: name it with "
            f"?output=<name or index>"
        )


_FLOATS = ("tensor(float)", "tensor(float16)", "tensor(double)", "tensor(bfloat16)")


def _is_float(output) -> bool:
    return output.type in _FLOATS


def _rank(output) -> int | None:
    return len(output.shape) if isinstance(output.shape, (list, tuple)) else None


def _describe(outputs) -> str:
    return ", ".join(f"{i}: {o.name} {o.type.removeprefix('tensor(').rstrip(')')} {list(o.shape)}"
                     for i, o in enumerate(outputs))


def _choose(outputs, requested: str | None, preferred: str, rank: int, spec_text: str, option: str) -> str | None:
    """Pick a float output of ``rank`` dimensions by ``?option=`` (name or index), else by name, else the only one.

    Integer outputs (token ids, lengths) are never chosen. When several float outputs of that rank
    fit and none has the preferred name, nothing is chosen: the error names the outputs and the fix.
    """
    names = [o.name for o in outputs]
    if requested is not None:
        index = names.index(requested) if requested in names else int(requested) if requested.isdigit() else None
        if index is None or index >= len(names):
            raise ModelLoadError(
                f"ONNX model spec {spec_text!r} asks for {option}={requested!r}, but the graph's outputs are "
                f"{', '.join(f'{i}: {n}' for i, n in enumerate(names))}"
            )
        chosen = outputs[index]
        if not _is_float(chosen) or _rank(chosen) not in (rank, None):
            shape = "(batch, labels)" if rank == 2 else "(batch, tokens, hidden)"
            raise ModelLoadError(
                f"ONNX model spec {spec_text!r} asks for {option}={requested!r}, but that output is "
                f"{chosen.type} {list(chosen.shape)}; {option} must be a float {shape} output. Its outputs are "
                f"{_describe(outputs)}" + (f"; did you mean ?hidden={requested}?" if option == "output" and
                                           _rank(chosen) == 3 else "")
            )
        return chosen.name
    fitting = [o for o in outputs if _is_float(o) and _rank(o) == rank]
    named = [o for o in fitting if o.name == preferred]
    if named:
        return named[0].name
    if len(fitting) > 1:
        raise ModelLoadError(
            f"ONNX model spec {spec_text!r}: several outputs could be the {preferred} ({', '.join(o.name for o in fitting)}); "
            f"its outputs are {_describe(outputs)}: name one with ?{option}=<name or index>"
        )
    return fitting[0].name if fitting else None

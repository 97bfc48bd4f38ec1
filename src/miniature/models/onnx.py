"""ONNX Runtime backend: an exported graph plus the tokenizer it was exported with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelLoadError
from .base import Backend
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
        self._dynamic: bool | None = None

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

    def files(self) -> list[Path]:
        return onnx_files(self.model_file, self.tokenizer_dir)

    def runs_alone(self) -> bool:
        """A graph with dynamic quantization (onnxruntime's quantize_dynamic: DynamicQuantizeLinear before each
        integer matmul) scales activations per batch; a static (QDQ) graph's scales are fixed: batched."""
        if self._dynamic is None:
            self._dynamic = dynamically_quantized(self.model_file)
        return self._dynamic

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

    def load(self, run: Any, declared: Any) -> None:
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
        # The head: of the task the model declares, when the run reads it; a graph that declares none is tried
        # for the run's tasks in turn (start and end logits make a QA model whatever the run).
        self.task, self.head = None, None
        for task in ([declared] if declared is not None else run.undeclared_heads()):
            if run.reads_head_of(task) or (declared is None and task is run):
                head = task.onnx_head(outputs, options=self.spec.options, config=self.config(), spec=self.spec.text,
                                      declared=task is declared)
                if head:
                    self.task, self.head = task, head
                    break
        others = [o for o in outputs if o.name not in (self.head or {}).values()]
        self.hidden_name = choose_output(others, self.spec.options.get("hidden"), "last_hidden_state", 3, self.spec.text,
                                         "hidden")
        if self.head is None and self.hidden_name is None:
            raise ModelLoadError(
                f"ONNX model {self.spec.name!r} has neither logits its task reads (classification: a float (batch, labels) "
                f"output of a model whose config.json declares a classifier) nor hidden states (a float (batch, tokens, "
                f"hidden) output); its outputs are {describe_outputs(outputs)}: name them with ?output=<name or index> "
                f"and ?hidden=<name or index>"
            )
        self.loaded = True

    def forward(self, batch: dict[str, np.ndarray], need_hidden: bool = True) -> tuple[np.ndarray | None, np.ndarray | None]:
        if "position_ids" in self.inputs and "position_ids" not in batch:
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
        hidden = self.hidden_name if need_hidden or self.head is None else None
        names = [*(self.head or {}).values(), *([hidden] if hidden else [])]
        results = dict(zip(names, self.session.run(names, feed)))
        logits = self.task.onnx_logits(results, self.head) if self.head else None
        return logits, results.get(hidden) if hidden else None


#: Operators that quantize activations with a scale computed from the tensor they are given.
_DYNAMIC_QUANTIZATION = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"})


def dynamically_quantized(model_file: Path) -> bool:
    """Whether an ONNX graph (or one of its subgraphs) quantizes activations dynamically."""
    import onnx

    try:
        graph = onnx.load(str(model_file), load_external_data=False).graph
    except Exception as exc:
        raise ModelLoadError(f"Could not read ONNX model {model_file}: {type(exc).__name__}: {exc}") from exc
    pending = [graph]
    while pending:
        current = pending.pop()
        for node in current.node:
            if node.op_type in _DYNAMIC_QUANTIZATION:
                return True
            pending += [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
            pending += [g for a in node.attribute if a.type == onnx.AttributeProto.GRAPHS for g in a.graphs]
    return False


_FLOATS = ("tensor(float)", "tensor(float16)", "tensor(double)", "tensor(bfloat16)")


def is_float(output) -> bool:
    return output.type in _FLOATS


def rank(output) -> int | None:
    return len(output.shape) if isinstance(output.shape, (list, tuple)) else None


def describe_outputs(outputs) -> str:
    return ", ".join(f"{i}: {o.name} {o.type.removeprefix('tensor(').rstrip(')')} {list(o.shape)}"
                     for i, o in enumerate(outputs))


def choose_output(outputs, requested: str | None, preferred: str, dims: int, spec_text: str, option: str) -> str | None:
    """Pick a float output of ``dims`` dimensions by ``?option=`` (name or index), else by name, else the only one.

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
        if not is_float(chosen) or rank(chosen) not in (dims, None):
            shape = "(batch, labels)" if dims == 2 else "(batch, tokens, hidden)"
            raise ModelLoadError(
                f"ONNX model spec {spec_text!r} asks for {option}={requested!r}, but that output is "
                f"{chosen.type} {list(chosen.shape)}; {option} must be a float {shape} output. Its outputs are "
                f"{describe_outputs(outputs)}" + (f"; did you mean ?hidden={requested}?" if option == "output" and
                                           rank(chosen) == 3 else "")
            )
        return chosen.name
    fitting = [o for o in outputs if is_float(o) and rank(o) == dims]
    named = [o for o in fitting if o.name == preferred]
    if named:
        return named[0].name
    if len(fitting) > 1:
        raise ModelLoadError(
            f"ONNX model spec {spec_text!r}: several outputs could be the {preferred} ({', '.join(o.name for o in fitting)}); "
            f"its outputs are {describe_outputs(outputs)}: name one with ?{option}=<name or index>"
        )
    return fitting[0].name if fitting else None

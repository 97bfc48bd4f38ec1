"""Compression recipes that write loadable candidates, built on real tools.

- :func:`export_onnx`: ``torch.onnx.export`` of a sequence classifier (logits) or extractive
  QA model (start and end logits), with the last hidden state as an output too and the
  tokenizer files beside it;
- :func:`quantize_onnx`: onnxruntime's dynamic int8 quantizer over such an export, or its
  static (QDQ) quantizer with activation ranges calibrated on given texts;
- :func:`quantize_torch`: torch dynamic int8 quantization of the Linear layers, on load;
- :func:`prune_magnitude`: global L1 unstructured pruning (``torch.nn.utils.prune``) of the
  encoder's Linear weights to a chosen sparsity;
- :func:`drop_layers`: keep every n-th encoder layer, no retraining;
- :func:`distill`: a smaller student initialised from every n-th teacher layer and trained
  on the teacher's softened logits (Hinton et al. 2015).

Every recipe writes ``miniature-manifest.json`` saying how the candidate was made.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import tasks
from .models.fingerprint import TOKENIZER_FILES

MANIFEST = "miniature-manifest.json"


def _write_manifest(out_dir: Path, recipe: str, source: str | Path, **details: Any) -> None:
    manifest = {"recipe": recipe, "source": str(source), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **details}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _copy_tokenizer(src: Path, out_dir: Path) -> None:
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, out_dir / name)


def _load(model_dir: Path):
    """The model as the backends load it: with the head of the task its config declares (a classifier, a QA
    model, a causal LM), else the bare encoder. Returns (model, tokenizer, task or None)."""
    import transformers

    task = tasks.declared(json.loads((model_dir / "config.json").read_text()))
    loader = getattr(transformers, task.auto_class) if task is not None else transformers.AutoModel
    # The recipes compress standard architectures: a model's own code never runs here.
    return (loader.from_pretrained(model_dir, trust_remote_code=False).eval(),
            transformers.AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False), task)


def export_onnx(model_dir: str | Path, out_dir: str | Path, *, opset: int = 17, hidden_states: bool = True) -> Path:
    """Export a HF model to ``out_dir/model.onnx``: its task's head (a classifier's ``logits``, a QA model's
    ``start_logits`` and ``end_logits``, a causal LM's (batch, tokens, vocabulary) ``logits``) and
    ``last_hidden_state`` unless ``hidden_states=False`` (a logits-only export, as many deployed graphs are;
    the KNN and OOD checks do not apply to it)."""
    import torch

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, tokenizer, task = _load(model_dir)
    if tokenizer.pad_token is None:  # GPT-2 and Llama tokenizers have none; the saved tokenizer is left as it was
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    sample = tokenizer(["a short sample", "a somewhat longer sample sentence"], padding=True, return_tensors="pt")
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in sample]
    options = task.export_options if task is not None else {}

    class Exported(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor):
            out = self.model(**dict(zip(names, inputs)), output_hidden_states=True, **options)
            heads = task.export_heads(out) if task is not None else ()
            return (*heads, *((out.hidden_states[-1],) if hidden_states or task is None else ()))

    path = out_dir / "model.onnx"
    heads = list(task.export_names) if task is not None else []
    outputs = [*heads, *(["last_hidden_state"] if hidden_states or not heads else [])]
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    axes.update(task.export_axes if task is not None else {})
    context = task.export_context(model) if task is not None else contextlib.nullcontext()
    with warnings.catch_warnings(), torch.inference_mode(), context:
        warnings.simplefilter("ignore")  # TorchScript-exporter deprecation and tracer notices
        torch.onnx.export(
            Exported(), tuple(sample[n] for n in names), str(path), input_names=names,
            output_names=outputs, dynamic_axes={k: v for k, v in axes.items() if k in names + outputs},
            opset_version=opset, dynamo=False,
        )
    _copy_tokenizer(model_dir, out_dir)
    _write_manifest(out_dir, "onnx-export", model_dir, opset=opset, torch=torch.__version__, hidden_states=hidden_states)
    return path


def quantize_onnx(
    onnx_path: str | Path,
    out_dir: str | Path,
    *,
    calibration_texts: Sequence[str] | None = None,
    max_length: int = 128,
    source: str | Path | None = None,
    nodes_to_exclude: Sequence[str] = (),
    calibration_cache: Path | None = None,
) -> Path:
    """int8 quantization of an ONNX graph with onnxruntime's quantizer.

    ``source``: the model the graph was exported from, recorded in the manifest (default: the graph
    itself; give it when the graph is a temporary export, so the manifest names what lasts).

    Without ``calibration_texts``: dynamic quantization (int8 weights; activations quantized
    on the fly). With them: static QDQ quantization, activation ranges calibrated (MinMax)
    on those texts, tokenized with the graph's tokenizer.

    ``nodes_to_exclude``: graph nodes left in float (``miniature compress tune`` chooses them).
    ``calibration_cache``: a file onnxruntime writes the activation ranges to on the first call and reads on the
    next ones, so variants of one graph are calibrated once.
    """
    import logging

    import onnxruntime
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.onnx"
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))  # the quantizer's "run pre-processing first" hint
    try:
        if calibration_texts is None:
            quantize_dynamic(str(onnx_path), str(path), weight_type=QuantType.QInt8,
                             nodes_to_exclude=list(nodes_to_exclude))
            details = {"recipe": "onnx-dynamic-int8"}
        else:
            cached = calibration_cache is not None and calibration_cache.is_file()
            reader = None if cached else _CalibrationReader(onnx_path, calibration_texts, max_length)
            quantize_static(str(onnx_path), str(path), reader, quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=list(nodes_to_exclude),
                            **({"calibration_cache_path": str(calibration_cache)} if calibration_cache else {}))
            details = {"recipe": "onnx-static-int8", "calibration_texts": len(calibration_texts), "method": "MinMax"}
        if nodes_to_exclude:
            details["nodes_in_float"] = list(nodes_to_exclude)
    finally:
        root.setLevel(level)
    _copy_tokenizer(onnx_path.parent, out_dir)
    recipe = details.pop("recipe")
    _write_manifest(out_dir, recipe, source or onnx_path, onnxruntime=onnxruntime.__version__, weight_type="QInt8",
                    **details)
    return path


class _CalibrationReader:
    """Feeds onnxruntime's static quantizer one tokenized calibration text at a time."""

    def __init__(self, onnx_path: Path, texts: Sequence[str], max_length: int) -> None:
        import onnxruntime
        from transformers import AutoTokenizer

        if not texts:
            raise ValueError("Expected at least one calibration text for static quantization but got none")
        names = [i.name for i in onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).get_inputs()]
        tokenizer = AutoTokenizer.from_pretrained(onnx_path.parent, trust_remote_code=False)
        self._feeds = iter([
            {k: v.astype("int64") for k, v in tokenizer([t], truncation=True, max_length=max_length, return_tensors="np").items() if k in names}
            for t in texts
        ])

    def get_next(self) -> dict | None:
        return next(self._feeds, None)


def quantize_torch(model_dir: str | Path, out_dir: str | Path, *, keep_float: Sequence[str] = ()) -> Path:
    """A candidate that loads with torch dynamic int8 quantization of every Linear layer.

    torch's dynamically quantized modules cannot be saved as safetensors, so the candidate
    is the model's files plus a manifest asking the HF backend to quantize on load (the same
    as the spec ``hf:<dir>?quantize=int8``); the int8 weights exist once it is loaded.
    ``keep_float``: names of Linear modules left in float (``miniature compress tune`` chooses them).
    """
    import torch

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in model_dir.iterdir():
        if path.is_file() and path.name != MANIFEST:
            shutil.copy2(path, out_dir / path.name)
    load = {"quantize": "int8", **({"keep_float": list(keep_float)} if keep_float else {})}
    _write_manifest(out_dir, "torch-dynamic-int8", model_dir, torch=torch.__version__, load=load)
    return out_dir


def prune_magnitude(model_dir: str | Path, out_dir: str | Path, *, sparsity: float = 0.5) -> Path:
    """Zero the ``sparsity`` share of smallest-magnitude weights of the encoder's Linear layers.

    Global L1 unstructured pruning with ``torch.nn.utils.prune`` over every Linear weight of
    the encoder (not the embeddings or the task head), made permanent before saving.
    """
    import torch
    from torch.nn.utils import prune

    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"Expected a sparsity in [0, 1) but got sparsity={sparsity}")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    model, tokenizer, _ = _load(model_dir)
    linears = [(m, "weight") for layer in _encoder_layers(model) for m in layer.modules() if isinstance(m, torch.nn.Linear)]
    prune.global_unstructured(linears, pruning_method=prune.L1Unstructured, amount=sparsity)
    for module, name in linears:
        prune.remove(module, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    zeros = sum(int((m.weight == 0).sum()) for m, _ in linears)
    total = sum(m.weight.numel() for m, _ in linears)
    _write_manifest(out_dir, "magnitude-pruning", model_dir, sparsity=sparsity, measured_sparsity=zeros / total,
                    scope="encoder Linear weights, global L1 unstructured")
    return out_dir


def drop_layers(model_dir: str | Path, out_dir: str | Path, *, keep_every: int = 2) -> Path:
    """Keep every ``keep_every``-th encoder layer (0, n, 2n, ...) and save, with no retraining."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if keep_every < 1:
        raise ValueError(f"Expected keep_every >= 1 but got keep_every={keep_every}")
    model, tokenizer, _ = _load(model_dir)
    layers = _encoder_layers(model)
    kept = list(range(0, len(layers), keep_every))
    _set_encoder_layers(model, type(layers)(layers[i] for i in kept), kept)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    _write_manifest(out_dir, "layer-dropping", model_dir, kept_layers=kept, layers_before=len(layers))
    return out_dir


def distill(
    teacher_dir: str | Path,
    out_dir: str | Path,
    texts: Sequence[str],
    *,
    keep_every: int = 2,
    steps: int = 100,
    batch_size: int = 16,
    temperature: float = 2.0,
    learning_rate: float = 5e-5,
    max_length: int = 128,
    seed: int = 0,
    progress: Any = None,
) -> Path:
    """Distil ``teacher_dir`` into a student with every ``keep_every``-th encoder layer (``progress``: a
    :class:`~miniature.progress.Progress` told each step and its loss).

    The student starts from the teacher's kept layers (as DistilBERT did) and is trained to
    match the teacher's temperature-softened class distribution on unlabelled ``texts``.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from .finetune import train

    teacher_dir, out_dir = Path(teacher_dir), Path(out_dir)
    config = json.loads((teacher_dir / "config.json").read_text())
    task = tasks.declared(config)
    if task is None or not task.class_distribution:
        from .errors import UsageError

        raise UsageError(
            f"distill trains a student on a sequence classifier's soft labels, but {teacher_dir} is not one "
            f"(architectures: {', '.join(config.get('architectures') or []) or 'not stated'}); "
            f"use drop_layers, prune_magnitude or the quantizers for other models"
        )
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir, trust_remote_code=False)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir, trust_remote_code=False).eval()
    student = AutoModelForSequenceClassification.from_pretrained(teacher_dir, trust_remote_code=False)
    layers = _encoder_layers(student)
    kept = list(range(0, len(layers), keep_every))
    layers_module = torch.nn.ModuleList(layers[i] for i in kept)
    _set_encoder_layers(student, layers_module, kept)

    def step_loss(generator: Any) -> Any:
        index = torch.randint(len(texts), (batch_size,), generator=generator).tolist()
        batch = tokenizer([texts[i] for i in index], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            target = torch.softmax(teacher(**batch).logits / temperature, dim=-1)
        log_probs = torch.log_softmax(student(**batch).logits / temperature, dim=-1)
        return torch.nn.functional.kl_div(log_probs, target, reduction="batchmean") * temperature**2

    final_loss = train(student, step_loss, steps=steps, learning_rate=learning_rate, seed=seed,
                       progress=None if progress is None else
                       lambda step, loss: progress.update(step, f"distillation loss {loss:.4f}"))
    out_dir.mkdir(parents=True, exist_ok=True)
    student.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    _write_manifest(out_dir, "distillation", teacher_dir, kept_layers=kept, steps=steps, temperature=temperature,
                    learning_rate=learning_rate, final_loss=final_loss)
    return out_dir


def _layer_holder(model: Any) -> tuple[Any, str]:
    """(module, attribute) holding the transformer blocks: BERT, DistilBERT, GPT-2 (``transformer.h``) and
    Llama-style decoders (``model.layers``)."""
    base = getattr(model, model.base_model_prefix, model)  # a bare encoder is its own base
    if hasattr(base, "encoder") and hasattr(base.encoder, "layer"):
        return base.encoder, "layer"
    if hasattr(base, "transformer") and hasattr(base.transformer, "layer"):  # DistilBERT
        return base.transformer, "layer"
    import torch

    for attribute in ("h", "layers"):  # GPT-2; Llama, Mistral, Qwen
        if isinstance(getattr(base, attribute, None), torch.nn.ModuleList):
            return base, attribute
    raise ValueError(f"Do not know where the encoder layers of {type(model).__name__} are")


def _encoder_layers(model: Any):
    holder, attribute = _layer_holder(model)
    return getattr(holder, attribute)


def _set_encoder_layers(model: Any, layers: Any, kept: list[int] | None = None) -> None:
    holder, attribute = _layer_holder(model)
    setattr(holder, attribute, layers)
    for index, layer in enumerate(layers):  # decoders index their key/value cache by the layer's number
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = index
    names = ("num_hidden_layers", "n_layer", "n_layers")
    attribute = next((n for n in names if hasattr(model.config, n)), "num_hidden_layers")
    previous = getattr(model.config, attribute, None)
    setattr(model.config, attribute, len(layers))
    types = getattr(model.config, "layer_types", None)  # Qwen2-style configs check len(layer_types) == layers
    if isinstance(types, list) and previous == len(types) and kept is not None:
        model.config.layer_types = [types[i] for i in kept]

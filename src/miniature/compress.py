"""Compression recipes that write loadable candidates, built on real tools.

- :func:`export_onnx`: ``torch.onnx.export`` of a sequence classifier, with its logits and
  last hidden state as outputs and the tokenizer files beside it;
- :func:`quantize_onnx`: onnxruntime's dynamic int8 quantizer over such an export;
- :func:`drop_layers`: keep every n-th encoder layer, no retraining;
- :func:`distill`: a smaller student initialised from every n-th teacher layer and trained
  on the teacher's softened logits (Hinton et al. 2015).

Torch dynamic int8 quantization needs no files: give the spec ``hf:<dir>?quantize=int8``.
Every recipe writes ``miniature-manifest.json`` saying how the candidate was made.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MANIFEST = "miniature-manifest.json"
_TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                    "vocab.json", "merges.txt", "spiece.model", "added_tokens.json")


def _write_manifest(out_dir: Path, recipe: str, source: str | Path, **details: Any) -> None:
    manifest = {"recipe": recipe, "source": str(source), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **details}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _copy_tokenizer(src: Path, out_dir: Path) -> None:
    for name in _TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, out_dir / name)


def _load(model_dir: Path):
    """The model as the backends load it: a classifier when its config says so, else the bare encoder."""
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    config = json.loads((model_dir / "config.json").read_text())
    classifier = any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or [])
    loader = AutoModelForSequenceClassification if classifier else AutoModel
    return loader.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir), classifier


def export_onnx(model_dir: str | Path, out_dir: str | Path, *, opset: int = 17) -> Path:
    """Export a HF model to ``out_dir/model.onnx``: outputs ``logits`` (classifiers only) and ``last_hidden_state``."""
    import torch

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, tokenizer, classifier = _load(model_dir)
    sample = tokenizer(["a short sample", "a somewhat longer sample sentence"], padding=True, return_tensors="pt")
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in sample]

    class Exported(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor):
            out = self.model(**dict(zip(names, inputs)), output_hidden_states=True)
            return (out.logits, out.hidden_states[-1]) if classifier else out.hidden_states[-1]

    path = out_dir / "model.onnx"
    outputs = ["logits", "last_hidden_state"] if classifier else ["last_hidden_state"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes.update(logits={0: "batch"}, last_hidden_state={0: "batch", 1: "sequence"})
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # TorchScript-exporter deprecation and tracer notices
        torch.onnx.export(
            Exported(), tuple(sample[n] for n in names), str(path), input_names=names,
            output_names=outputs, dynamic_axes={k: v for k, v in axes.items() if k in names + outputs},
            opset_version=opset, dynamo=False,
        )
    _copy_tokenizer(model_dir, out_dir)
    _write_manifest(out_dir, "onnx-export", model_dir, opset=opset, torch=torch.__version__)
    return path


def quantize_onnx(onnx_path: str | Path, out_dir: str | Path) -> Path:
    """Dynamic int8 weight quantization of an ONNX graph with onnxruntime's quantizer."""
    import logging

    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.onnx"
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # the quantizer's pre-processing hint
    quantize_dynamic(str(onnx_path), str(path), weight_type=QuantType.QInt8)
    _copy_tokenizer(onnx_path.parent, out_dir)
    _write_manifest(out_dir, "onnx-dynamic-int8", onnx_path, onnxruntime=onnxruntime.__version__, weight_type="QInt8")
    return path


def drop_layers(model_dir: str | Path, out_dir: str | Path, *, keep_every: int = 2) -> Path:
    """Keep every ``keep_every``-th encoder layer (0, n, 2n, ...) and save, with no retraining."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if keep_every < 1:
        raise ValueError(f"Expected keep_every >= 1 but got keep_every={keep_every}")
    model, tokenizer, _ = _load(model_dir)
    layers = _encoder_layers(model)
    kept = list(range(0, len(layers), keep_every))
    _set_encoder_layers(model, type(layers)(layers[i] for i in kept))
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
    learning_rate: float = 1e-3,
    max_length: int = 128,
    seed: int = 0,
) -> Path:
    """Distil ``teacher_dir`` into a student with every ``keep_every``-th encoder layer.

    The student starts from the teacher's kept layers (as DistilBERT did) and is trained to
    match the teacher's temperature-softened class distribution on unlabelled ``texts``.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    teacher_dir, out_dir = Path(teacher_dir), Path(out_dir)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    student = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    layers = _encoder_layers(student)
    kept = list(range(0, len(layers), keep_every))
    layers_module = torch.nn.ModuleList(layers[i] for i in kept)
    _set_encoder_layers(student, layers_module)
    optimiser = torch.optim.AdamW(student.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    student.train()
    for _ in range(steps):
        index = torch.randint(len(texts), (batch_size,), generator=generator).tolist()
        batch = tokenizer([texts[i] for i in index], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            target = torch.softmax(teacher(**batch).logits / temperature, dim=-1)
        log_probs = torch.log_softmax(student(**batch).logits / temperature, dim=-1)
        loss = torch.nn.functional.kl_div(log_probs, target, reduction="batchmean") * temperature**2
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    student.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    student.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    _write_manifest(out_dir, "distillation", teacher_dir, kept_layers=kept, steps=steps, temperature=temperature,
                    final_loss=float(loss.detach()))
    return out_dir


def _encoder_layers(model: Any):
    base = getattr(model, model.base_model_prefix, model)  # a bare encoder is its own base
    if hasattr(base, "encoder") and hasattr(base.encoder, "layer"):
        return base.encoder.layer
    if hasattr(base, "transformer") and hasattr(base.transformer, "layer"):  # DistilBERT
        return base.transformer.layer
    raise ValueError(f"Do not know where the encoder layers of {type(model).__name__} are")


def _set_encoder_layers(model: Any, layers: Any) -> None:
    base = getattr(model, model.base_model_prefix, model)
    holder = base.encoder if hasattr(base, "encoder") else base.transformer
    holder.layer = layers
    attribute = "num_hidden_layers" if hasattr(model.config, "num_hidden_layers") else "n_layers"
    setattr(model.config, attribute, len(layers))

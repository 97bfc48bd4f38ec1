"""Hugging Face transformers backend: hub ids and local model directories."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelLoadError
from ..manifest import read_manifest
from .base import Backend
from .device import dtype_argument
from .fingerprint import directory_files

# Files needed to run a model; weights come as safetensors when the repo has them.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]


def download(spec_text: str, repo_id: str, revision: str | None) -> Path:
    """Resolve a hub id to a local snapshot directory (from the local HF cache when offline)."""
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(repo_id, revision=revision, allow_patterns=_HUB_PATTERNS)
    except Exception as exc:  # the hub client raises many types; all mean "not available here"
        raise ModelLoadError(
            f"Could not fetch model {repo_id!r} (model spec {spec_text!r}) from the Hugging Face Hub "
            f"or its local cache: {type(exc).__name__}: {exc}. Offline, download it once elsewhere "
            f"or point the spec at a local directory."
        ) from exc
    if not any(Path(path).glob("*.safetensors")):
        # Only pickled weights exist: fetch them too (they are loaded with weights_only=True).
        path = snapshot_download(repo_id, revision=revision, allow_patterns=[*_HUB_PATTERNS, "*.bin"])
    return Path(path)


class HFBackend(Backend):
    """A local HF directory, loaded with the head of the task its config declares (or ``?task=``) when the run
    reads that task's heads (a sequence classifier, an extractive-QA model, a causal LM), else as ``AutoModel``
    (base and sentence encoders: hidden states only)."""

    def files(self) -> list[Path]:
        return directory_files(self.local_dir)

    def quantize(self) -> str | None:
        """``?quantize=`` of the spec, else what a candidate's miniature-manifest.json asks for on load."""
        return self.spec.options.get("quantize") or self._on_load().get("quantize")

    def _on_load(self) -> dict:
        """What a candidate's miniature-manifest.json asks of loading."""
        try:
            on_load = read_manifest(self.local_dir).get("load")
        except ValueError as exc:
            raise ModelLoadError(f"Model {self.spec.name!r}: its manifest says how to load it, and {exc}") from None
        return on_load if isinstance(on_load, dict) else {}

    def keep_float(self) -> list[str]:
        """Linear modules a tuned torch-int8 candidate leaves in float (its manifest's ``load.keep_float``)."""
        return [str(n) for n in self._on_load().get("keep_float", [])] if self.quantize() == "int8" else []

    def cpu_only(self) -> bool:
        return self.quantize() == "int8"

    def runs_alone(self) -> bool:
        return self.quantize() == "int8"  # torch dynamic int8: activation scales per batch

    def load_options(self) -> dict[str, str]:
        options = super().load_options()
        if self.quantize():
            options["quantize"] = self.quantize()
        if self.keep_float():
            options["keep_float"] = ",".join(self.keep_float())
        return options

    def load(self, run: Any, declared: Any) -> None:
        import torch
        import transformers

        # A classifier yields logits and hidden states; a QA model start/end logits and hidden states; a causal
        # LM next-token logits; a base or sentence encoder (no head, or one the run does not read) hidden states
        # only, which is all the representation and OOD checks need.
        self.task = declared if run.reads_head_of(declared) else None
        loader = getattr(transformers, self.task.auto_class) if self.task is not None else transformers.AutoModel
        if not self.config().get("model_type"):
            raise ModelLoadError(
                f"Model {self.spec.name!r}: {self.local_dir / 'config.json'} has no model_type, so nothing says which "
                f"architecture its weights are for (transformers would build a default one, randomly initialised, from "
                f"the folder's name); give the config.json the model was saved with")
        try:
            trust = self.trust_remote_code  # never run a model's own code unless the user opted in
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.local_dir, trust_remote_code=trust)
            model, info = loader.from_pretrained(self.local_dir, output_loading_info=True, trust_remote_code=trust,
                                                 **dtype_argument(self.dtype))
        except Exception as exc:
            raise ModelLoadError(
                f"Could not load model {self.spec.name!r} from {self.local_dir} "
                f"({loader.__name__}): {type(exc).__name__}: {exc}"
            ) from exc
        self._refuse_untrained(info.get("missing_keys") or [], run)
        model.eval()
        if self.quantize() == "int8":
            if self.device != "cpu" or self.dtype != "float32":
                from ..errors import UsageError

                raise UsageError(f"Model {self.spec.name!r} is torch dynamic int8 (quantize=int8), which runs on the CPU "
                                 f"in float32 only; it was asked to run on {self.device} in {self.dtype}: give it "
                                 f"?device=cpu&dtype=float32 in its spec")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.ao deprecation notices, not actionable here
                kept = set(self.keep_float())
                unknown = kept - {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
                if unknown:
                    raise ModelLoadError(f"Model {self.spec.name!r}: its manifest keeps {sorted(unknown)} in float, "
                                         f"which are not Linear modules of the model")
                # Every Linear but those kept in float (all of them when none are): torch matches module names.
                spec = ({n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n not in kept}
                        if kept else {torch.nn.Linear})
                model = torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8)
        else:
            model = model.to(self.device)
        self.model = model
        self.loaded = True

    def _refuse_untrained(self, missing: list[str], run: Any) -> None:
        """Weights that the load left newly initialised would make the model compute at random: a model error
        naming them (its head's, with what to do; any others, as a checkpoint that does not match its config)."""
        if not missing:
            return
        heads = self.task.head_weights if self.task is not None else ()
        untrained = sorted(k for k in missing if any(h in k for h in heads))
        if untrained:
            raise ModelLoadError(
                f"Model {self.spec.name!r} ({self.local_dir}) has no trained {self.task.head}: {', '.join(untrained)} "
                f"were newly initialised, so its predictions would be random. Fine-tune it for {run.name} first, or "
                f"give a fine-tuned checkpoint.")
        shown = ", ".join(sorted(missing)[:5]) + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
        raise ModelLoadError(
            f"Model {self.spec.name!r} ({self.local_dir}): its weight files lack {len(missing)} of the weights its "
            f"config.json describes ({shown}), which would be newly initialised at random; give the complete checkpoint "
            f"the config belongs to")

    def forward(self, batch: dict[str, np.ndarray], need_hidden: bool = True) -> tuple[np.ndarray | None, np.ndarray | None]:
        import torch

        hidden = need_hidden or self.task is None  # a bare encoder has only its hidden states
        with torch.inference_mode():
            out = self.model(**{k: torch.from_numpy(v).to(self.device) for k, v in batch.items()},
                             output_hidden_states=hidden)
        host = lambda tensor: tensor.float().cpu().numpy()  # noqa: E731 - float16/bfloat16 on any device -> float32 here
        logits = self.task.logits(out, host) if self.task is not None else None
        return logits, host(out.hidden_states[-1]) if hidden else None

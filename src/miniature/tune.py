"""Quantization tuned against behaviour: keep in float the layers that cause the drift, until the gates hold.

The paper's future work is compression that preserves its characteristics, not only accuracy. Intel Neural
Compressor's accuracy-aware tuning falls back operators to float one at a time until an *accuracy* criterion
holds; here the criterion is every gate the user sets (error-set Jaccard, neighbour agreement, KL, top-1,
...), measured by the same characteristics and engine that gate the result later.

1. **Sensitivity**: the fully quantized model, and for each quantizable layer (a module: an ONNX node group under
   one module path; a torch ``Linear``) the float model with that layer alone quantized. A layer's score is the
   share of the plain int8 model's drift from the float one that it causes on its own, per gated metric, summed
   over the metrics. One trial per layer, each one forward pass of the tuning data through the engine (the
   reference's outputs are computed once).
2. **Search**: the layers from the most harmful; bisection over how many of the first ones stay in float, until
   the fewest that make every gate pass (the top-k sets are nested, so the gates' outcome is close to monotone in
   k; the answer is a k whose variant was measured to pass, never an interpolation).
3. **Result**: the passing variant with the fewest float layers (or, when the budget ends first, the one nearest
   to passing), written like any recipe's output with its manifest's ``tuning`` section.

Quantizing one layer alone (``quantize-alone``, the default) measures its own harm; keeping one layer alone in
float in the quantized model (``keep-float``) measures what is left when it is undone, which compounding errors
of the other layers mask. Both cost one trial per layer. On the demo's static int8 (82 layers, four gates on 800
sentences), keep-float ordered the layers so that the search needed 67 of them in float (84 MB, 91 MB float);
quantize-alone found that 7 suffice (24.9 MB, plain int8 23.2 MB), and that variant passed all five of the demo's
gates on its held-out eval set.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .characteristics import registry
from .characteristics.base import Threshold, Verdict
from .errors import UsageError
from .manifest import MANIFEST, read_manifest, text_digests
from .maths import kl_from_logits

#: The recipes a tuning run can start from.
RECIPES = ("onnx-int8", "torch-int8")
#: The ONNX ops whose weights the dynamic quantizer makes int8 ("layers" in the torch sense: Linear, Embedding).
WEIGHT_OPS = ("MatMul", "Gemm", "Gather")
#: Ops onnxruntime's static quantizer leaves alone (quantize_static's ``op_types_to_quantize`` default).
NOT_QUANTIZED = {"Constant", "Cast", "QuantizeLinear", "DequantizeLinear"}


@dataclass
class Trial:
    """One variant measured on the tuning data: the layers it keeps in float, each gated metric's value."""

    kept: tuple[str, ...]
    values: dict[str, float]
    passed: bool
    #: How far from passing: the sum over failing gates of (bound - value) over the full drift (0 when passed).
    shortfall: float
    label: str = ""
    #: What each gate compared with its bound: the point estimate, or the cautious end of its interval.
    compared: dict[str, float] = field(default_factory=dict)
    #: The gates it failed.
    failed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "float_layers": len(self.kept), "values": self.values, "compared": self.compared,
                "passed": self.passed, "shortfall": round(self.shortfall, 6)}


@dataclass
class Tuning:
    """The outcome of :func:`tune`: the layers, their sensitivities, every trial, and the chosen one."""

    recipe: str
    layers: list[str]
    #: Per layer, ordered from the most harmful: its score and each metric's change when it alone is float.
    sensitivity: list[dict[str, Any]]
    trials: list[Trial]
    plain: Trial
    float_model: Trial
    best: Trial
    found: bool
    thresholds: dict[str, float]
    #: What the gates compared with their bounds: ``lower`` (the cautious end of the interval) or ``point``.
    gate: str = "lower"
    #: How each layer's sensitivity was measured: kept alone in float (``keep-float``) or quantized alone.
    sensitivity_by: str = "quantize-alone"
    #: Each gate's parameters other than its bound (a neighbour gate's K), where it has any.
    threshold_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, dict[str, float]] = field(default_factory=dict)

    def manifest(self) -> dict[str, Any]:
        """The manifest's ``tuning`` section."""
        return {"recipe": self.recipe, "found": self.found, "gate": self.gate, "sensitivity_by": self.sensitivity_by,
                "thresholds": self.thresholds,
                "threshold_params": self.threshold_params,
                "layers": len(self.layers), "float_layers": list(self.best.kept),
                "sensitivity": self.sensitivity, "trials": [t.as_dict() for t in self.trials],
                "models": self.models}


# -- variants of one quantization ----------------------------------------------------------------------------------

class OnnxVariants:
    """onnxruntime int8 of one float export with chosen layers left in float (``nodes_to_exclude``); dynamic, or
    static (QDQ, MinMax) when calibration texts are given, calibrated once (onnxruntime's calibration cache).

    A layer is a module of the exported model: the graph's nodes that torch's exporter named under one module path
    (``/model/bert/encoder/layer.0/attention/self/query/MatMul`` belongs to ``.../self/query``) and that the
    quantizer quantizes: in dynamic mode the ops with int8 weights (MatMul, Gemm, Gather), in static QDQ mode every
    op of the module (the quantizer puts QDQ pairs around all of them: the bias Add, LayerNormalization, Softmax,
    GELU's Erf and Mul, ...)."""

    def __init__(self, source: Path, work: Path, calibration_texts: Sequence[str] | None, max_length: int) -> None:
        import onnx

        from .compress import export_onnx

        self.source, self.work = source, work
        self.float_path = export_onnx(source, work / "float")
        self.calibration_texts, self.max_length = calibration_texts, max_length
        graph = onnx.load(str(self.float_path), load_external_data=False).graph
        weights = {i.name for i in graph.initializer}
        if calibration_texts is None:
            chosen = [n for n in graph.node if n.op_type in WEIGHT_OPS and any(i in weights for i in n.input)]
        else:
            # The static quantizer wraps every op's inputs and outputs in QDQ (onnxruntime quantizes all op types but
            # these when none are named), so a layer is every node under its module path.
            chosen = [n for n in graph.node if n.op_type not in NOT_QUANTIZED]
        self.nodes: dict[str, list[str]] = {}
        for node in chosen:
            # The dynamic quantizer rewrites a Gemm as a MatMul named after it, and excludes by the rewritten name.
            names = [node.name, f"{node.name}_MatMul"] if node.op_type == "Gemm" else [node.name]
            self.nodes.setdefault(node.name.rsplit("/", 1)[0] or node.name, []).extend(names)
        self.layers = list(self.nodes)
        self.recipe = "onnx-dynamic-int8" if calibration_texts is None else "onnx-static-int8"
        self._cache = work / "calibration.json"
        self._built = 0

    def float_spec(self) -> str:
        return f"onnx:{self.float_path}"

    def build(self, kept: Sequence[str]) -> tuple[str, Path]:
        """(spec, directory) of the variant keeping ``kept`` in float."""
        from .compress import quantize_onnx

        self._built += 1
        out = self.work / f"variant-{self._built}"
        path = quantize_onnx(self.float_path, out, calibration_texts=self.calibration_texts, max_length=self.max_length,
                             source=self.source, nodes_to_exclude=[n for layer in kept for n in self.nodes[layer]],
                             calibration_cache=self._cache)
        return f"onnx:{path}", out

    @staticmethod
    def size(directory: Path) -> int:
        return (directory / "model.onnx").stat().st_size

    def float_size(self) -> int:
        return self.float_path.stat().st_size


class TorchVariants:
    """torch dynamic int8 on load with chosen ``Linear`` modules left in float (the manifest's ``keep_float``)."""

    recipe = "torch-dynamic-int8"

    def __init__(self, source: Path, work: Path) -> None:
        import torch

        from .compress import _load

        self.source, self.work = source, work
        model, _, _ = _load(source)
        self.layers = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
        self._built = 0

    def float_spec(self) -> str:
        return str(self.source)

    def build(self, kept: Sequence[str]) -> tuple[str, Path]:
        from .compress import quantize_torch

        self._built += 1
        out = self.work / f"variant-{self._built}"
        quantize_torch(self.source, out, keep_float=list(kept))
        return str(out), out

    def size(self, directory: Path) -> int:
        """Bytes of the weights once quantized: int8 Linear weights (1 byte each, plus a scale and zero point
        per layer) and every other parameter as stored (torch's quantized modules cannot be saved)."""
        from .compress import _load

        kept = set(read_manifest(directory)["load"].get("keep_float", []))
        model, _, _ = _load(self.source)
        total = 0
        linears = {name for name in self.layers if name not in kept}
        for name, parameter in model.named_parameters():
            owner, _, leaf = name.rpartition(".")
            total += parameter.numel() * (1 if owner in linears and leaf == "weight" else parameter.element_size())
        return total + 16 * len(linears)

    def float_size(self) -> int:
        return sum(p.stat().st_size for p in self.source.glob("*.safetensors"))


# -- the run ------------------------------------------------------------------------------------------------------

def tunable(name: str) -> Any:
    """The characteristic ``name``, when it needs only the tuning data (it is read as the eval set)."""
    characteristic = registry.get(name)
    if set(characteristic.needs) - {"eval"}:
        raise UsageError(f"--threshold {name}: {name} needs {', '.join(characteristic.needs)}, and a tuning run has the "
                         f"tuning data only; tune on a characteristic that needs eval data alone "
                         f"({', '.join(n for n, c in registry.characteristics().items() if set(c.needs) == {'eval'})})")
    return characteristic


def tune(source: Path, out: Path, *, recipe: str, tune_data: str, thresholds: Mapping[str, Threshold],
         calibration_texts: Sequence[str] | None = None, max_trials: int = 16, max_length: int = 128,
         batch_size: int = 32, gate: str = "lower", say: Callable[[str], None] = print,
         progress: Callable[[int, int], None] | None = None, sensitivity_by: str = "quantize-alone") -> Tuning:
    """Tune ``recipe`` on ``source`` until every gate in ``thresholds`` holds on ``tune_data``; write the chosen
    variant to ``out`` with its manifest. ``max_trials``: variants the search may measure after the sensitivity
    pass (which measures one per layer). ``progress(done, total)``: after each sensitivity trial.

    ``gate``: what a variant's gates compare with their bounds, as the ``gate`` setting: by default the cautious end
    of each metric's bootstrap 95% interval (``lower``), not the point estimate. Tuning measures dozens of variants
    on one data set and keeps one that passes; with point estimates, one that passes by the luck of a small tuning
    set is likely among them (on the demo, a variant with one layer in float passed four gates on 200 sentences at
    their point estimates, and failed three of them on the eval set, worse than plain int8)."""
    from . import tasks
    from .config import Settings
    from .session import Session

    if recipe not in RECIPES:
        raise UsageError(f"--recipe: expected one of {', '.join(RECIPES)} but got {recipe!r}")
    if not thresholds:
        raise UsageError("compress tune needs at least one --threshold NAME=BOUND: the gates the tuned model must meet")
    if calibration_texts is not None and recipe != "onnx-int8":
        raise UsageError(f"--texts calibrates onnx-int8's static quantization; {recipe} is dynamic and takes none")
    characteristics = {name: tunable(name) for name in thresholds}
    declared = tasks.declared(json.loads((source / "config.json").read_text()))
    work = Path(tempfile.mkdtemp(prefix="miniature-tune-"))
    try:
        variants = (OnnxVariants(source, work, calibration_texts, max_length) if recipe == "onnx-int8"
                    else TorchVariants(source, work))
        if not variants.layers:
            raise UsageError(f"{source} has no layer {recipe} quantizes, so there is nothing to tune")
        settings = Settings(reference=str(source), eval=tune_data, max_length=max_length, batch_size=batch_size,
                            cache_dir=work / "cache", gate=gate, thresholds=dict(thresholds),
                            **({"task": declared.name} if declared is not None else {}))
        session = Session(settings)
        built: dict[tuple[str, ...], tuple[str, Path]] = {}

        def measured(spec: str) -> dict[str, tuple[float, float, bool]]:
            """Each gated metric's value on the tuning data, what its gate compares with the bound, and whether it
            passes (as a gate in ``gate`` mode decides)."""
            out = {}
            for name, characteristic in characteristics.items():
                result = session.prepare(name, spec, thresholds[name]).result
                verdict = Verdict.decide(result, thresholds[name].value, bound=characteristic.bound, mode=gate)
                out[name] = (float(result), verdict.compared, verdict.passed)
            return out

        def variant(kept: tuple[str, ...]) -> dict[str, tuple[float, float, bool]]:
            built[kept] = variants.build(kept)
            return measured(built[kept][0])

        tuning_set = session.dataset(tune_data)
        reference_logits = session.outputs(session.model(str(source)), tuning_set).logits

        def closeness(kept: tuple[str, ...]) -> float | None:
            """The variant's mean KL from the reference's output distribution: a continuous tie-break for the
            sensitivity order, where an agreement (a share of points) moves in steps and most layers alone move it by
            none. None for models without per-point logits (an encoder, a QA model's spans)."""
            logits = session.outputs(session.model(built[kept][0]), tuning_set).logits
            if reference_logits is None or logits is None:
                return None
            return float(kl_from_logits(reference_logits, logits).mean())

        float_measured = measured(variants.float_spec())
        plain_measured = variant(())
        scale = {name: abs(float_measured[name][0] - plain_measured[name][0]) for name in characteristics}

        def trial(kept: tuple[str, ...], label: str, figures: dict[str, tuple[float, float, bool]] | None = None
                  ) -> Trial:
            figures = figures if figures is not None else variant(kept)
            shortfall = sum(abs(compared - thresholds[name].value) / (scale[name] or abs(thresholds[name].value) or 1.0)
                            for name, (_, compared, passed) in figures.items() if not passed)
            return Trial(kept, {n: v for n, (v, _, _) in figures.items()}, all(p for _, _, p in figures.values()),
                         shortfall, label, {n: c for n, (_, c, _) in figures.items()},
                         [n for n, (_, _, p) in figures.items() if not p])

        plain = trial((), "plain", plain_measured)
        float_model = trial(tuple(variants.layers), "float", float_measured)
        say(f"{recipe} of {source.name}: {len(variants.layers)} layers; plain int8 {_describe(plain)}; "
            f"float {_describe(float_model)}")
        trials, sensitivity = [plain], []
        if not plain.passed and float_model.passed:
            alone = sensitivity_by == "quantize-alone"
            for i, layer in enumerate(variants.layers, 1):
                kept = tuple(other for other in variants.layers if other != layer) if alone else (layer,)
                one = trial(kept, f"sensitivity: {layer} {'alone quantized' if alone else 'alone in float'}")
                trials.append(one)
                base = float_model if alone else plain
                drift = {name: one.values[name] - base.values[name] for name in characteristics}
                # Harm: the share of the plain model's drift this layer causes when quantized alone, or undoes when
                # it alone stays in float; the KL breaks ties the same way round.
                harm = -_score(drift, scale, characteristics) if alone else _score(drift, scale, characteristics)
                kl, base_kl = closeness(kept), (0.0 if alone else closeness(()))
                tie = None if kl is None or base_kl is None else (kl - base_kl if alone else base_kl - kl)
                sensitivity.append({"layer": layer, "score": harm, "drift": drift, "kl_harm": tie})
                say(f"sensitivity {i}/{len(variants.layers)}: {layer} {'alone quantized' if alone else 'kept in float'}: "
                    + ", ".join(f"{n} {v:+.4g}" for n, v in drift.items()))
                if progress is not None:
                    progress(i, len(variants.layers))
            sensitivity.sort(key=lambda row: (-row["score"], -(row["kl_harm"] or 0.0)))
        order = [row["layer"] for row in sensitivity]
        # Bisection over k, the number of the most harmful layers kept in float: top-`low` fails (measured, or the
        # plain model), top-`high` passes (measured, or every layer: the float model, which passed).
        low, high, searched = 0, len(order), 0
        while order and searched < max_trials and (high - low > 1 or not any(t.passed for t in trials)):
            k = (low + high) // 2 if high - low > 1 else high
            step = trial(tuple(order[:k]), f"search: {k} of {len(order)} layers in float")
            trials.append(step)
            searched += 1
            say(f"search {searched}: {k} layers in float: {_describe(step)}")
            if step.passed:
                high = k
            elif k == high:  # the most float variant fails: nothing left to try
                break
            else:
                low = k
        passed = [t for t in trials if t.passed]
        best = min(passed, key=lambda t: len(t.kept)) if passed else min(trials, key=lambda t: t.shortfall)
        out.mkdir(parents=True, exist_ok=True)
        for item in built[best.kept][1].iterdir():
            shutil.copy2(item, out / item.name)
        tuning = Tuning(recipe=variants.recipe, layers=list(variants.layers), sensitivity=sensitivity, trials=trials,
                        plain=plain, float_model=float_model, best=best, found=bool(passed),
                        thresholds={n: t.value for n, t in thresholds.items()}, gate=gate,
                        sensitivity_by=sensitivity_by,
                        threshold_params={n: dict(t.params) for n, t in thresholds.items() if t.params})
        tuning.models = _speeds_and_sizes(session, variants, {"plain": built[()], "tuned": built[best.kept]}, say)
        manifest_path = out / MANIFEST
        manifest = json.loads(manifest_path.read_text())
        manifest["recipe"] = f"{variants.recipe}-tuned"
        manifest["tuning"] = {**tuning.manifest(),
                              "tune_data": _data_identity(tune_data, tuning_set.texts)}
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        return tuning
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _score(drift: Mapping[str, float], scale: Mapping[str, float], characteristics: Mapping[str, Any]) -> float:
    """How much of the plain model's drift from the float one keeping a layer in float undoes, summed over the
    metrics (each normalised by that drift, so KL's nats and an agreement's share weigh alike)."""
    score = 0.0
    for name, characteristic in characteristics.items():
        better = drift[name] if characteristic.higher_is_better else -drift[name]
        score += better / scale[name] if scale[name] > 0 else 0.0
    return score


def _describe(trial: Trial) -> str:
    verdict = "passes" if trial.passed else "fails"
    return f"{verdict} ({', '.join(f'{n} {v:.4g}' for n, v in trial.values.items())})"


def _speeds_and_sizes(session: Any, variants: Any, built: Mapping[str, tuple[str, Path]],
                      say: Callable[[str], None]) -> dict[str, dict[str, float]]:
    """Points/s and size of the plain, tuned and float models: the speed of the one forward pass over the tuning
    data each already had in ``session`` (its cache starts empty, so each ran; as a report measures it)."""
    out = {}
    for label, (spec, directory) in [*built.items(), ("float", (variants.float_spec(), None))]:
        out[label] = {"points_per_second": session.engine.measures(session.model(spec))["points_per_second"],
                      "bytes": int(variants.size(directory) if directory is not None else variants.float_size())}
    say("speed and size on the tuning data: " + "; ".join(
        f"{label} {v['points_per_second']:.1f} points/s, {v['bytes'] / 1e6:.2f} MB" for label, v in out.items()))
    return out


def _data_identity(spec: str, texts: Sequence[str]) -> dict[str, Any]:
    """What the manifest records of the tuning data: its spec and its texts' digests, which a later gate
    compares with its data (:func:`miniature.manifest.tuned_on`)."""
    return {"spec": str(spec), "n": len(texts), "text_digests": text_digests(texts)}

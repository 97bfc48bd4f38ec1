"""The ``miniature`` command line."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import __version__
from .errors import MiniatureError, UsageError
from .options import add_options, positive_int


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="miniature", description="Gate compressed models on behaving like their reference.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="offline demo: fine-tune all-MiniLM-L6-v2, compress it six ways, gate the candidates with pytest"
    )
    demo.add_argument("--out", default="miniature-demo", help="where models, config and cache go (default: %(default)s)")
    demo.add_argument("--quick", action="store_true", help="smaller corpus and fewer training steps (for CI)")
    demo.add_argument("--strict", action="store_true", help="exit with pytest's code, so a failed gate fails the command")
    demo.add_argument("--train", metavar="DATASET", help="fine-tune on this labelled dataset instead of the demo corpus")
    demo.add_argument("--eval", metavar="DATASET", help="with --train: the labelled eval set (default: the last quarter of --train)")
    compare = commands.add_parser(
        "compare", help="run the checks and gates without writing tests; exit 0 if every gate passes, 1 if one fails",
        description="Compare a reference with candidates on every characteristic whose data is given, gate on the "
                    "thresholds of [tool.miniature.thresholds] and --threshold, and print the tables. A check that "
                    "cannot apply to a model or data set is reported as not applicable unless you asked for it. "
                    "Exit codes: 0 every gate passed, 1 a gate failed, 2 usage error, 3 a model or data set could "
                    "not be used, 4 internal error, 130 interrupted.",
        epilog="characteristics: " + "; ".join(f"{c.name}: {c.summary}" for c in _characteristics()),
    )
    add_options(compare.add_argument, plugin=False)
    compare.add_argument(
        "--threshold", action="append", default=[], type=threshold_arg, metavar="NAME=BOUND[@K]",
        help="a gate on a characteristic (names below): a minimum for an agreement (NAME=0.45, or NAME=0.3@10 with "
             "K = 10), a maximum for a gap; the direction is the characteristic's; overrides [tool.miniature.thresholds]",
    )
    report = commands.add_parser("report", help="re-render a saved JSON report (terminal tables, Markdown)")
    report.add_argument("path", help="a report written by --miniature-report or miniature compare --report")
    report.add_argument("--markdown", metavar="PATH", help="also write the Markdown summary to PATH")
    report.add_argument("--html", metavar="PATH", help="also write the HTML report with its plots to PATH")

    compress = commands.add_parser(
        "compress", help="make a compressed candidate of a model with a real tool, ready to gate",
        description="Write a loadable candidate (HF directory, ONNX or GGUF file with its tokenizer) and a "
                    "miniature-manifest.json saying how it was made; print the spec to gate it with.",
    )
    compress.add_argument("recipe", choices=RECIPES, help="; ".join(f"{k}: {v}" for k, v in RECIPES.items()))
    compress.add_argument("source", help="the model to compress: a local HF directory, hf:<hub id>, or an alias; gguf: "
                                         "also a .gguf file (requantized)")
    compress.add_argument("out", help="directory to write the candidate to")
    compress.add_argument("--sparsity", type=fraction, default=0.5, help="prune: share of encoder weights zeroed (default 0.5)")
    compress.add_argument("--keep-every", type=positive_int, default=2, help="drop-layers, distill: keep every n-th layer (default 2)")
    compress.add_argument("--texts", metavar="DATASET", help="distill: unlabelled texts to distil on; onnx-int8: calibration texts (static quantization)")
    compress.add_argument("--steps", type=positive_int, default=200, help="distill: training steps (default 200)")
    compress.add_argument("--learning-rate", type=float, default=5e-5,
                          help="distill: AdamW learning rate (default 5e-5, for a pretrained encoder's layers; the demo's)")
    compress.add_argument("--type", dest="gguf_type", default="Q8_0", metavar="TYPE",
                          help="gguf: llama.cpp's quantization type (F16, Q8_0, Q6_K, Q5_K_M, Q5_0, Q4_K_M, Q4_K_S, Q4_1, "
                               "Q4_0, Q3_K_M, Q2_K; default Q8_0)")
    compress.add_argument("--recipe", dest="base_recipe", choices=["onnx-int8", "torch-int8"],
                          help="tune: the quantization to tune (onnx-int8 is static with --texts)")
    compress.add_argument("--tune-data", metavar="DATASET",
                          help="tune: labelled texts the gates are measured on while tuning (default: --texts); "
                               "never the data you gate the result on")
    compress.add_argument("--threshold", action="append", type=threshold_arg, default=[], metavar="NAME=BOUND",
                          help="tune: a gate the tuned model must meet on the tuning data (repeatable)")
    compress.add_argument("--max-trials", type=positive_int, default=16,
                          help="tune: variants the search may measure after the sensitivity pass (default 16)")
    compress.add_argument("--gate", choices=["lower", "point"], default="lower",
                          help="tune: compare each gate's bound with the cautious end of its 95%% interval (lower, "
                               "the default: a variant must not pass by the luck of the tuning sample) or with the "
                               "point estimate")
    compress.add_argument("--sensitivity", choices=["quantize-alone", "keep-float"], default="quantize-alone",
                          help="tune: measure each layer quantized alone in the float model (quantize-alone, the "
                               "default) or kept alone in float in the quantized model (keep-float)")
    compress.add_argument("--max-length", type=positive_int, default=128,
                          help="tune, onnx-int8: tokens per text for calibration and tuning (default 128)")
    return parser


RECIPES = {
    "torch-int8": "torch dynamic int8 of the Linear layers, applied on load",
    "onnx": "torch.onnx export (fp32)",
    "onnx-int8": "ONNX export + onnxruntime int8 (dynamic; static with --texts)",
    "gguf": "a causal LM as GGUF (F16 first), quantized by llama.cpp's own quantizer (--type; the gguf extra)",
    "prune": "global magnitude pruning of encoder Linear weights (--sparsity)",
    "drop-layers": "keep every n-th encoder layer, no retraining (--keep-every)",
    "distill": "a student of every n-th layer trained on the model's soft labels (--texts, --steps)",
    "tune": "quantize (--recipe) keeping in float the layers that break the gates (--tune-data, --threshold); exit 1 "
            "when the trials (--max-trials) end first",
}


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1) but got {text!r}")
    return value


def _characteristics() -> list:
    from .characteristics import registry

    return list(registry.characteristics().values())


def threshold_arg(text: str) -> tuple[str, Any]:
    from .characteristics import registry
    from .errors import UsageError as Invalid

    name, sep, value = text.partition("=")
    try:
        characteristic = registry.get(name) if sep else None
    except Invalid:
        characteristic = None
    if characteristic is None:
        raise argparse.ArgumentTypeError(f"expected NAME=BOUND[@K] with NAME one of {', '.join(registry.names())} "
                                         f"but got {text!r}")
    bound, _, k = value.partition("@")
    try:
        table = {characteristic.bound_key: float(bound), **({"k": int(k)} if k else {})}
        return characteristic.name, characteristic.parse_threshold(table, owner="--threshold")
    except (ValueError, Invalid) as exc:
        raise argparse.ArgumentTypeError(f"expected a number for the bound (and a whole number for K) in {text!r}: "
                                         f"{exc}") from None


def run_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .errors import GateFailure
    from .options import resolve_settings
    from .session import Session

    here = Path.cwd()
    settings, _ = resolve_settings(args, here)
    for name, threshold in args.threshold:
        settings.thresholds[name] = threshold
    settings.validate()
    if settings.reference is None or not settings.candidates:
        raise UsageError("compare needs --reference SPEC and at least one --candidate SPEC (or reference and candidates in [tool.miniature])")
    if all(getattr(settings, key) is None for key in ("eval", "train", "ood", "attack_set")):
        raise UsageError("compare needs data: --eval SPEC, or --train SPEC and --ood SPEC, or --attack-set SPEC")
    session = Session(settings)
    checks, explicit = session.chosen_checks()
    for line in session.unused_data(checks):
        print(f"miniature: warning: {line}", file=sys.stderr)
    failures, error = [], None
    try:
        for spec in settings.candidates:
            for check in checks:
                try:
                    session.run_check(check, spec, settings.thresholds.get(check), explicit=explicit)
                except GateFailure as failure:
                    failures.append(str(failure))
    except MiniatureError as exc:  # the run ends here, and still writes every report asked for, with the error in it
        error = exc
    code = exit_code(error) if error is not None else 1 if failures else 0
    for line in session.finish(exit_status=code, options=args, here=here):
        print(line)
    for failure in failures:
        print(f"\nFAILED {failure}")
    if error is not None:
        raise error  # one line on stderr, and its own exit code
    gated = sum(1 for e in session.ledger.entries if e.verdict is not None)
    print(f"\n{len(failures)} of {gated} gates failed" if failures else f"\nall {gated} gates passed" if gated else "\nno gates set")
    return code


def run_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .report.json_report import read_json
    from .report.terminal import error_lines, matrix_lines, printable, summary
    from .report.writing import write_reports

    report = read_json(args.path)
    print(printable(f"pytest-miniature report of {report['created']}: {report['verdict']} "
                    f"({report['gates']['failed']} of {report['gates']['total']} gates failed)"))
    for line in summary(report["results"]) + matrix_lines(report.get("matrices") or {}) + \
            [printable(f"warning: {w}") for w in report.get("warnings") or []] + \
            error_lines(report.get("errors") or []):
        print(line)
    options = argparse.Namespace(miniature_markdown=args.markdown, miniature_html=args.html)
    for line in write_reports(report, options, Path.cwd(), step_summary=False):
        print(line)
    return 0


def run_compress(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from . import compress
    from .data import load_eval_set, parse_dataset_spec
    from .models import open_backend, parse_model_spec

    parsed = parse_model_spec(args.source)
    if args.recipe == "gguf":
        from .gguf_recipe import compress_gguf

        if parsed.backend == "onnx":
            raise UsageError(f"Expected a HF causal LM directory or a .gguf file to write as GGUF but got {args.source!r}")
        source = Path(parsed.location) if parsed.backend == "gguf" else open_backend(parsed).local_dir
        written = compress_gguf(source, Path(args.out), args.gguf_type.upper())
        print(f"wrote gguf {args.gguf_type.upper()} candidate of {args.source}; gate it with: --candidate gguf:{written}")
        return 0
    source = open_backend(parsed).local_dir
    if parsed.backend != "hf" or not (source / "config.json").is_file():
        raise UsageError(f"Expected a HF model directory to compress but got {args.source!r}")
    out = Path(args.out)
    texts = list(load_eval_set(parse_dataset_spec(args.texts)).texts) if args.texts else None
    if args.recipe == "tune":
        return run_tune(args, source, out, texts)
    if args.recipe == "distill" and texts is None:
        raise UsageError("The distill recipe needs --texts DATASET: unlabelled texts to distil on")
    if args.recipe == "torch-int8":
        spec = str(compress.quantize_torch(source, out))
    elif args.recipe == "onnx":
        spec = f"onnx:{compress.export_onnx(source, out)}"
    elif args.recipe == "onnx-int8":
        with tempfile.TemporaryDirectory() as fp32:
            exported = compress.export_onnx(source, fp32)
            spec = f"onnx:{compress.quantize_onnx(exported, out, calibration_texts=texts, source=source)}"
    elif args.recipe == "prune":
        spec = str(compress.prune_magnitude(source, out, sparsity=args.sparsity))
    elif args.recipe == "drop-layers":
        spec = str(compress.drop_layers(source, out, keep_every=args.keep_every))
    else:
        from .progress import Progress

        progress = Progress(lambda line: print(f"miniature: {line}", file=sys.stderr), f"distilling {args.source}",
                            args.steps, unit="steps", live=sys.stderr.isatty())
        spec = str(compress.distill(source, out, texts, keep_every=args.keep_every, steps=args.steps,
                                    learning_rate=args.learning_rate, progress=progress))
    print(f"wrote {args.recipe} candidate of {args.source}; gate it with: --candidate {spec}")
    return 0


def run_tune(args: argparse.Namespace, source: Any, out: Any, texts: list[str] | None) -> int:
    from .tune import tune

    if args.base_recipe is None:
        raise UsageError("compress tune needs --recipe onnx-int8 or --recipe torch-int8: the quantization to tune")
    tune_data = args.tune_data or args.texts
    if tune_data is None:
        raise UsageError("compress tune needs --tune-data DATASET (or --texts, which then serves both): labelled "
                         "texts to measure the gates on")
    if args.base_recipe == "torch-int8" and args.texts and args.tune_data:
        raise UsageError("--texts calibrates onnx-int8's static quantization; torch-int8 is dynamic and takes none "
                         "(give the tuning data as --tune-data alone)")
    say = lambda line: print(f"miniature: {line}", file=sys.stderr)  # noqa: E731
    tuning = tune(source, out, recipe=args.base_recipe, tune_data=tune_data, thresholds=dict(args.threshold),
                  calibration_texts=texts if args.base_recipe == "onnx-int8" else None, max_trials=args.max_trials,
                  max_length=args.max_length, gate=args.gate, sensitivity_by=args.sensitivity, say=say)
    best = tuning.best
    spec = f"onnx:{out / 'model.onnx'}" if args.base_recipe == "onnx-int8" else str(out)
    print(f"{tuning.recipe} of {args.source} tuned on {tune_data}: {len(tuning.layers)} layers, "
          f"{len(tuning.sensitivity)} sensitivity trials and {len(tuning.trials) - 1 - len(tuning.sensitivity)} search "
          f"trials")
    if tuning.sensitivity:
        alone = tuning.sensitivity_by == "quantize-alone"
        print(f"the layers that cause the drift: each metric's change when that layer alone is "
              f"{'quantized (from the float model)' if alone else 'kept in float (in the plain int8 model)'}; most "
              f"harmful first; score: the share of the plain model's drift it "
              f"{'causes' if alone else 'undoes'}, summed over the gates")
        width = max(len(row["layer"]) for row in tuning.sensitivity[:10])
        print(f"{'layer':{width}} {'score':>8}  " + "  ".join(f"{n:>16}" for n in tuning.thresholds))
        for row in tuning.sensitivity[:10]:
            print(f"{row['layer']:{width}} {row['score']:8.3f}  "
                  + "  ".join(f"{row['drift'][n]:+16.4g}" for n in tuning.thresholds))
    if len(tuning.sensitivity) > 10:
        print(f"... {len(tuning.sensitivity) - 10} more in the manifest")
    if tuning.gate == "lower":
        print("the gates compared the cautious end of each metric's 95% interval with its bound (--gate lower); "
              "the figures below are the point estimates")
    for label, trial in (("plain", tuning.plain), ("tuned", best), ("float", tuning.float_model)):
        figures = ", ".join(f"{n} {trial.values[n]:.4g}" for n in tuning.thresholds)
        model = tuning.models.get(label, {})
        print(f"{label:6} {len(trial.kept):3d} layers in float: {figures}"
              + (f"; {model['points_per_second']:.1f} points/s, {model['bytes'] / 1e6:.2f} MB" if model else ""))
    if tuning.found:
        print(f"every gate holds on the tuning data with {len(best.kept)} of {len(tuning.layers)} layers in float; "
              f"gate the result on held-out data (never {tune_data}): --candidate {spec}")
        return 0
    failing = lambda trial: "; ".join(  # noqa: E731
        f"{n} {trial.compared[n]:.4g} against the bound {tuning.thresholds[n]:g}" for n in trial.failed)
    if not tuning.float_model.passed:
        print(f"the float model itself fails the gates on {tune_data} ({failing(tuning.float_model)}), so no "
              f"quantization of it can pass them; wrote the plain {args.base_recipe} candidate to {out}")
    else:
        print(f"no variant met every gate within {args.max_trials} search trials (--max-trials); wrote the nearest "
              f"({len(best.kept)} layers in float: {failing(best)}): --candidate {spec}")
    return 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(args.out, quick=args.quick, strict=args.strict, train=args.train, eval=args.eval)
        if args.command == "compress":
            return run_compress(args)
        if args.command == "compare":
            return run_compare(args)
        if args.command == "report":
            return run_report(args)
    except MiniatureError as exc:  # a usage error, or a model or data set that could not be used
        print(f"miniature: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:  # Ctrl-C: its own code (never 1, a failed gate), no traceback; `finally`s released Ray's actors
        print("miniature: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: one line, the traceback in a file, and a code of its own
        print(f"miniature: internal error: {type(exc).__name__}: {exc} (the traceback is in {_save_traceback()}; "
              f"please report it)", file=sys.stderr)
        return 4
    return 0  # pragma: no cover - argparse requires a command


def exit_code(error: MiniatureError) -> int:
    """2 for a usage error (a bad option, setting or spec), 3 for a model or data set that could not be used."""
    return 2 if isinstance(error, UsageError) else 3


def _save_traceback() -> str:
    import tempfile
    import traceback

    with tempfile.NamedTemporaryFile("w", prefix="miniature-traceback-", suffix=".txt", delete=False) as handle:
        traceback.print_exc(file=handle)
    return handle.name


if __name__ == "__main__":
    sys.exit(main())

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
        description="Compare a reference with candidates on every characteristic whose data is given "
                    "(prediction errors and data representation on --eval, data distribution on --train and --ood), "
                    "gate on the thresholds of [tool.miniature.thresholds] and --threshold, and print the tables.",
    )
    add_options(compare.add_argument, plugin=False)
    compare.add_argument(
        "--threshold", action="append", default=[], type=threshold_arg, metavar="NAME=MIN[@K]",
        help="a gate, e.g. error_jaccard=0.45 or knn_agreement=0.3@10; overrides [tool.miniature.thresholds]",
    )
    report = commands.add_parser("report", help="re-render a saved JSON report (terminal tables, Markdown)")
    report.add_argument("path", help="a report written by --miniature-report or miniature compare --report")
    report.add_argument("--markdown", metavar="PATH", help="also write the Markdown summary to PATH")
    report.add_argument("--html", metavar="PATH", help="also write the HTML report with its plots to PATH")

    compress = commands.add_parser(
        "compress", help="make a compressed candidate of a model with a real tool, ready to gate",
        description="Write a loadable candidate (HF directory or ONNX file with its tokenizer) and a "
                    "miniature-manifest.json saying how it was made; print the spec to gate it with.",
    )
    compress.add_argument("recipe", choices=RECIPES, help="; ".join(f"{k}: {v}" for k, v in RECIPES.items()))
    compress.add_argument("source", help="the model to compress: a local HF directory, hf:<hub id>, or an alias")
    compress.add_argument("out", help="directory to write the candidate to")
    compress.add_argument("--sparsity", type=fraction, default=0.5, help="prune: share of encoder weights zeroed (default 0.5)")
    compress.add_argument("--keep-every", type=positive_int, default=2, help="drop-layers, distill: keep every n-th layer (default 2)")
    compress.add_argument("--texts", metavar="DATASET", help="distill: unlabelled texts to distil on; onnx-int8: calibration texts (static quantization)")
    compress.add_argument("--steps", type=positive_int, default=200, help="distill: training steps (default 200)")
    return parser


RECIPES = {
    "torch-int8": "torch dynamic int8 of the Linear layers, applied on load",
    "onnx": "torch.onnx export (fp32)",
    "onnx-int8": "ONNX export + onnxruntime int8 (dynamic; static with --texts)",
    "prune": "global magnitude pruning of encoder Linear weights (--sparsity)",
    "drop-layers": "keep every n-th encoder layer, no retraining (--keep-every)",
    "distill": "a student of every n-th layer trained on the model's soft labels (--texts, --steps)",
}


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1) but got {text!r}")
    return value


def threshold_arg(text: str) -> tuple[str, Any]:
    from .config import THRESHOLDS

    name, sep, value = text.partition("=")
    if not sep or name not in THRESHOLDS:
        raise argparse.ArgumentTypeError(f"expected NAME=MIN[@K] with NAME one of {', '.join(THRESHOLDS)} but got {text!r}")
    minimum, _, k = value.partition("@")
    try:
        return name, ({"min": float(minimum), "k": int(k)} if k else float(minimum))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number for MIN (and a whole number for K) but got {text!r}") from None


def run_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .assertions import GateFailure
    from .config import Threshold
    from .gates import run_check
    from .options import resolve_settings
    from .report.json_report import build_report, write_json
    from .report.markdown import markdown_summary
    from .report.terminal import summary
    from .runner import Runner

    here = Path.cwd()
    settings, _ = resolve_settings(args, here)
    for name, value in args.threshold:
        settings.thresholds[name] = Threshold.parse(name, value)
    if settings.reference is None or not settings.candidates:
        raise UsageError("compare needs --reference SPEC and at least one --candidate SPEC (or reference and candidates in [tool.miniature])")
    if settings.eval is None and (settings.train is None or settings.ood is None) and settings.attack_set is None:
        raise UsageError("compare needs data: --eval SPEC, or --train SPEC and --ood SPEC, or --attack-set SPEC")
    runner = Runner(settings)
    failures = []
    for spec in settings.candidates:
        for check in list(settings.thresholds) or applicable_checks(runner):
            try:
                run_check(runner, check, spec, settings.thresholds.get(check))
            except GateFailure as failure:
                failures.append(str(failure))
    for line in summary(runner.results):
        print(line)
    stats = runner.stats
    print(f"model outputs: {stats.computed} computed ({stats.seconds_computing:.1f}s), {stats.from_disk} from cache "
          f"(cache: {settings.cache_dir or 'disabled'})")
    code = 1 if failures else 0
    if args.miniature_compare_baseline:
        from .report.baseline import baseline_lines
        from .report.json_report import read_json

        source = here / args.miniature_compare_baseline
        for line in baseline_lines(runner.results, read_json(source), str(source)):
            print(line)
    report = build_report(runner, exit_status=code)
    for path, what in ((args.miniature_report, "JSON report"), (args.miniature_save_baseline, "baseline saved")):
        if path:
            print(f"{what}: {write_json(report, here / path)}")
    if args.miniature_html:
        from .report.html import write_html

        print(f"HTML report: {write_html(runner.results, here / args.miniature_html, report=report)}")
    if args.miniature_markdown and runner.results:
        path = here / args.miniature_markdown
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(markdown_summary(runner.results), encoding="utf-8")
        print(f"Markdown summary: {path}")
    for failure in failures:
        print(f"\nFAILED {failure}")
    gated = sum(1 for r in runner.results if getattr(r, "threshold", None) is not None)
    print(f"\n{len(failures)} of {gated} gates failed" if failures else f"\nall {gated} gates passed" if gated else "\nno gates set")
    return code


def applicable_checks(runner: Any) -> list[str]:
    """Without thresholds: every check whose data is configured (prediction errors only on labelled data,
    or on QA data with gold answers; the attack only with an attack set)."""
    settings = runner.settings
    checks = []
    if settings.eval is not None:
        data = runner.dataset(settings.eval)
        if data.labels is not None or data.answers is not None:
            checks.append("error_jaccard")
        checks.append("knn_agreement")
    if settings.train is not None and settings.ood is not None:
        checks.append("ood_agreement")
    if settings.attack_set is not None:
        checks.append("attack_robustness")
    return checks


def run_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .report.json_report import read_json
    from .report.markdown import markdown_summary
    from .report.terminal import summary

    report = read_json(args.path)
    print(f"pytest-miniature report of {report['created']}: {report['verdict']} "
          f"({report['gates']['failed']} of {report['gates']['total']} gates failed)")
    for line in summary(report["results"]):
        print(line)
    if args.markdown:
        path = Path(args.markdown)
        path.write_text(markdown_summary(report["results"]), encoding="utf-8")
        print(f"Markdown summary: {path}")
    if args.html:
        from .report.html import write_html

        print(f"HTML report: {write_html(report['results'], args.html, report=report)}")
    return 0


def run_compress(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from . import compress
    from .data import load_eval_set, parse_dataset_spec
    from .models import open_backend, parse_model_spec

    source = open_backend(parse_model_spec(args.source)).local_dir
    if source.suffix == ".onnx" or not (source / "config.json").is_file():
        raise UsageError(f"Expected a HF model directory to compress but got {args.source!r}")
    out = Path(args.out)
    texts = list(load_eval_set(parse_dataset_spec(args.texts)).texts) if args.texts else None
    if args.recipe == "distill" and texts is None:
        raise UsageError("The distill recipe needs --texts DATASET: unlabelled texts to distil on")
    if args.recipe == "torch-int8":
        spec = str(compress.quantize_torch(source, out))
    elif args.recipe == "onnx":
        spec = f"onnx:{compress.export_onnx(source, out)}"
    elif args.recipe == "onnx-int8":
        with tempfile.TemporaryDirectory() as fp32:
            spec = f"onnx:{compress.quantize_onnx(compress.export_onnx(source, fp32), out, calibration_texts=texts)}"
    elif args.recipe == "prune":
        spec = str(compress.prune_magnitude(source, out, sparsity=args.sparsity))
    elif args.recipe == "drop-layers":
        spec = str(compress.drop_layers(source, out, keep_every=args.keep_every))
    else:
        spec = str(compress.distill(source, out, texts, keep_every=args.keep_every, steps=args.steps))
    print(f"wrote {args.recipe} candidate of {args.source}; gate it with: --candidate {spec}")
    return 0


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
    except UsageError as exc:
        print(f"miniature: error: {exc}", file=sys.stderr)
        return 2
    except MiniatureError as exc:  # a model or data set that could not be used
        print(f"miniature: error: {exc}", file=sys.stderr)
        return 3
    return 0  # pragma: no cover - argparse requires a command


if __name__ == "__main__":
    sys.exit(main())

"""The ``miniature`` command line."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .errors import MiniatureError


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
    compress = commands.add_parser(
        "compress", help="make a compressed candidate of a model with a real tool, ready to gate",
        description="Write a loadable candidate (HF directory or ONNX file with its tokenizer) and a "
                    "miniature-manifest.json saying how it was made; print the spec to gate it with.",
    )
    compress.add_argument("recipe", choices=RECIPES, help="; ".join(f"{k}: {v}" for k, v in RECIPES.items()))
    compress.add_argument("source", help="the model to compress: a local HF directory, hf:<hub id>, or an alias")
    compress.add_argument("out", help="directory to write the candidate to")
    compress.add_argument("--sparsity", type=fraction, default=0.5, help="prune: share of encoder weights zeroed (default 0.5)")
    compress.add_argument("--keep-every", type=whole, default=2, help="drop-layers, distill: keep every n-th layer (default 2)")
    compress.add_argument("--texts", metavar="DATASET", help="distill: unlabelled texts to distil on; onnx-int8: calibration texts (static quantization)")
    compress.add_argument("--steps", type=whole, default=200, help="distill: training steps (default 200)")
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


def whole(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1 but got {text!r}")
    return int(text)


def run_compress(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from . import compress
    from .data import load_eval_set, parse_dataset_spec
    from .errors import UsageError
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
    except MiniatureError as exc:
        print(f"miniature: error: {exc}", file=sys.stderr)
        return 2
    return 0  # pragma: no cover - argparse requires a command


if __name__ == "__main__":
    sys.exit(main())

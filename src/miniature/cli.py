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
        "demo", help="offline demo: fine-tune all-MiniLM-L6-v2, compress it three ways, gate the candidates with pytest"
    )
    demo.add_argument("--out", default="miniature-demo", help="where models, config and cache go (default: %(default)s)")
    demo.add_argument("--quick", action="store_true", help="smaller corpus and fewer training steps (for CI)")
    demo.add_argument("--strict", action="store_true", help="exit with pytest's code, so a failed gate fails the command")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(args.out, quick=args.quick, strict=args.strict)
    except MiniatureError as exc:
        print(f"miniature: error: {exc}", file=sys.stderr)
        return 2
    return 0  # pragma: no cover - argparse requires a command


if __name__ == "__main__":
    sys.exit(main())

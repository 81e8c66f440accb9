"""``python -m symscale.data.generate ...`` = ``symscale data generate ...`` (same options)."""

import argparse
import sys

from ...errors import SymscaleError
from .cli import register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m symscale.data.generate")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["generate", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except SymscaleError as exc:
        print(f"symscale: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

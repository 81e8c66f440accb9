"""The ``symscale`` command line. It only maps arguments onto the library; each area registers its own
sub-commands (``data``, ``train``/``eval``/``md``, ``fit``/``report``, ``study``/``status``,
``plan``).

Errors raised as :class:`symscale.errors.SymscaleError` (bad files, missing keys, impossible configs) are
printed as one line on stderr with exit status 2; nothing else is caught.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import SymscaleError

# Each area's CLI module defines ``register(subparsers)``.
_AREAS = [
    "symscale.data.cli",
    "symscale.train.cli",
    "symscale.laws.cli",
    "symscale.study.cli",
    "symscale.plan.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="symscale", description=(
        "Scaling-law laboratory for neural force fields: prepare data, train the symmetry staircase, "
        "fit L(N, D, C) laws."))
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _AREAS:
        importlib.import_module(name).register(sub)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a non-UTF-8 file name is printed escaped, never a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except SymscaleError as exc:
        print(f"symscale: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Numeric limits shared by the configuration schemas and the command lines."""

from __future__ import annotations

import argparse

#: Largest seed accepted: numpy's and torch's generators take seeds in [0, 2**32).
MAX_SEED = 2**32 - 1


def seed_arg(text: str) -> int:
    """``argparse`` type of a ``--seed`` option: an integer in [0, :data:`MAX_SEED`]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be in 0..{MAX_SEED}, got {value}")
    return value

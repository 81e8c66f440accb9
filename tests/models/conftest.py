"""Fixtures of the model tests; the structures themselves are built in ``suite.py``."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_float64():
    """Every model test starts from the same global RNG state and default dtype."""
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    yield
    torch.set_default_dtype(old)

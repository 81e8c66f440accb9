"""Fixtures of the data-layer tests; the structures come from ``data_synth.py``."""

from __future__ import annotations

import pytest
from data_synth import emt_structures

from symscale.data import Structure


@pytest.fixture(scope="session")
def structures() -> list[Structure]:
    return emt_structures()


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, structures):
    from symscale.data import write_prepared

    return write_prepared(structures, tmp_path_factory.mktemp("prep") / "ds", source="emt", seed=3,
                          val_fraction=0.25)

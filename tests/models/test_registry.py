"""The model registry: lazy imports, option validation, one-line ConfigErrors, parameter counts."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from symscale.errors import ConfigError
from symscale.models import build, count_parameters, registry
from symscale.models.registry import available


def test_available_reports_options_with_descriptions():
    fams = available()
    assert {"mpnn", "egnn"} <= set(fams)
    for name, opts in fams.items():
        assert opts["forces"][0] == "direct" and opts["cutoff"][0] == 5.0, name
        assert all(isinstance(d, str) and d for _, d in opts.values()), name
    assert fams["mpnn"]["num_layers"][0] == 4


def test_import_is_lazy():
    code = "import sys, symscale.models; print(any(m in sys.modules for m in " \
           "('symscale.models.mpnn', 'symscale.models.egnn', 'symscale.models.esen')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("call, needle", [
    (lambda: build("transformer", 8), "'transformer'"),
    (lambda: build("mpnn", 8, num_layer=3), "'num_layer'"),
    (lambda: build("mpnn", 0), "width"),
    (lambda: build("mpnn", 2.5), "width"),
    (lambda: build("mpnn", "wide"), "width"),
    (lambda: build("mpnn", True), "width"),
    (lambda: build("egnn", 8, forces="magic"), "forces"),
    (lambda: build("egnn", 8, num_layers=0), "num_layers"),
])
def test_bad_requests_raise_one_line_config_error(call, needle):
    with pytest.raises(ConfigError) as info:
        call()
    msg = str(info.value)
    assert needle in msg and "\n" not in msg


def test_missing_family_module_is_skipped(monkeypatch):
    monkeypatch.setitem(registry.FAMILIES, "ghost", ("symscale.models.ghost_family", "Ghost"))
    assert "ghost" not in available() and "mpnn" in available()
    with pytest.raises(ConfigError, match="'ghost' is not available"):
        build("ghost", 8)


def test_broken_family_import_is_not_hidden(monkeypatch, tmp_path):
    (tmp_path / "symscale_broken_family.py").write_text("import symscale_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.FAMILIES, "broken", ("symscale_broken_family", "Broken"))
    with pytest.raises(ModuleNotFoundError, match="symscale_no_such_dependency"):
        available()


def test_build_config_rebuilds_same_model():
    torch.manual_seed(1)
    model = build("egnn", 16, num_layers=2, vector_channels=3)
    cfg = model.build_config
    assert cfg == {"name": "egnn", "width": 16, "options": {"num_layers": 2, "vector_channels": 3}}
    again = build(cfg["name"], cfg["width"], **cfg["options"])
    assert count_parameters(again) == count_parameters(model)
    assert build("mpnn", torch.tensor(8).item()).width == 8


def test_count_parameters():
    lin = nn.Linear(3, 4)
    assert count_parameters(lin) == 16
    lin.bias.requires_grad_(False)
    assert count_parameters(lin) == 12 and count_parameters(lin, trainable_only=False) == 16
    shared = nn.Sequential(lin, lin)
    assert count_parameters(shared, trainable_only=False) == 16

"""One device check for eval, md, the calculator and training runs: one-line ConfigError, before any work."""

from __future__ import annotations

import pytest
import torch

from symscale.calculator import SymscaleCalculator
from symscale.cli import main
from symscale.errors import ConfigError
from symscale.train.guards import resolve_device

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def test_resolve_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    unknown = r"^--device: unknown device 'gpu' \(use cpu, cuda, cuda:N, mps or auto\)$"
    with pytest.raises(ConfigError, match=unknown):
        resolve_device("gpu", "--device")
    with pytest.raises(ConfigError, match="^device: unsupported device 'meta'"):
        resolve_device("meta")
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        with pytest.raises(ConfigError, match=f"this machine has {n} CUDA device"):
            resolve_device(f"cuda:{n}")
    else:
        with pytest.raises(ConfigError, match="^device: 'cuda:1' requested but CUDA is not available on this "
                                              "machine$"):
            resolve_device("cuda:1")


@no_cuda
@pytest.mark.parametrize("command", ["eval", "md"])
def test_cli_device_cuda_without_cuda_fails_first(command, tmp_path, capsys):
    # the checkpoint does not exist either: the device is checked before anything is read
    missing = str(tmp_path / "no-run")
    argv = [command, missing, str(tmp_path / "no-data")] if command == "eval" else \
        [command, missing, "--structure", str(tmp_path / "no.xyz")]
    assert main(argv + ["--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err == "symscale: error: --device: 'cuda' requested but CUDA is not available on this machine\n"
    assert main(argv + ["--device", "tpu"]) == 2
    assert capsys.readouterr().err.startswith("symscale: error: --device: unknown device 'tpu'")


@no_cuda
def test_library_entry_points_share_the_check(tiny_run, emt_dataset, tmp_path):
    from ase.build import molecule

    from symscale.train.checkpoint import load_model
    from symscale.train.evaluate import evaluate_checkpoint
    from symscale.train.md import run_nve

    message = "^device: 'cuda' requested but CUDA is not available on this machine$"
    with pytest.raises(ConfigError, match=message):
        SymscaleCalculator(tiny_run, device="cuda")
    with pytest.raises(ConfigError, match=message):
        load_model(tiny_run, device="cuda")
    with pytest.raises(ConfigError, match=message):
        evaluate_checkpoint(tiny_run, emt_dataset, device="cuda")
    with pytest.raises(ConfigError, match=message):
        run_nve(tiny_run, molecule("H2O"), steps=2, device="cuda")


@no_cuda
def test_run_config_device_cuda_without_cuda(emt_dataset, tmp_path):
    from symscale.train.run import run

    cfg = {"data": {"path": str(emt_dataset)}, "model": {"family": "mpnn", "width": 8}, "device": "cuda"}
    with pytest.raises(ConfigError, match="^device: 'cuda' requested but CUDA is not available"):
        run(cfg, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()

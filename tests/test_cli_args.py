"""Seeds on every command line are checked by argparse (exit 2 naming the option), never a traceback."""

from __future__ import annotations

import pytest

from symscale.cli import main


@pytest.mark.parametrize("argv", [
    ["fit", "runs.csv"], ["md", "run", "--structure", "mol.xyz"], ["data", "generate", "--out", "x"],
    ["data", "prepare", "src.xyz", "--out", "x"],
])
@pytest.mark.parametrize("seed", ["-1", "4294967296", "1.5"])
def test_bad_seeds_are_usage_errors(argv, seed, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--seed", seed])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --seed" in err and "Traceback" not in err

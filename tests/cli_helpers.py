"""Running ``symscale`` in-process in tests, and the shape of its user errors (one line, exit 2)."""

from __future__ import annotations

from symscale.cli import main


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of ``symscale ARGV`` (arguments may be paths)."""
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """Exit status 2 and a single ``symscale: error: ...`` line on stderr containing every needle."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("symscale: error: "), err
    for n in needles:
        assert n in lines[0], lines[0]

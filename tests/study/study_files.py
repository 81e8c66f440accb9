"""Tiny studies on the embedded data: a few thousand atoms per run, so a run takes seconds."""

from pathlib import Path

import yaml


def write_study(path: Path, out: Path, **overrides) -> Path:
    """A two-family, two-width study YAML at ``path`` writing into ``out``; ``overrides`` replace keys."""
    doc = {
        "name": "tiny",
        "out": str(out),
        "data": {"embedded": True, "val_size": 32},
        "tokens": 2500,
        "batch_size": 8,
        "evaluation": {"points": 4},
        "architectures": [{"family": "mpnn", "widths": [4, 8]}, {"family": "egnn", "widths": [4, 8]}],
        "report": {"bootstrap": 10},
    }
    doc.update(overrides)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


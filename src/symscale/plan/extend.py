"""The study a plan extends, and the study file that extends it.

:func:`read_study` accepts a study YAML file (its directory is the file's ``out``, else ``runs/<name>``) or a
study directory (its ``study.yaml``, the copy the study driver keeps). :func:`write_extension` writes the
study file of a plan: the study's own settings, with each architecture entry's new widths added to
``widths`` and their budgets in a ``tokens`` mapping (widths that were already there keep their budget,
except those the plan trains longer: their entry is raised, which gives their runs new ids),
the μP base width pinned (``base_width``: new widths below the smallest would otherwise move it and change
every run's id), and ``out`` pointing at the same study directory. Before anything is written, the file is
parsed back and expanded: every run of the study must keep its id (so ``symscale study`` reuses it) but
those of the widths trained longer, and every planned run must be new. YAML comments of the original file are not kept; the written file opens
with what was planned.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..atomic import write_text
from ..errors import ConfigError, DataError
from ..outputs import check_output_file
from ..study.schema import StudyConfig, expand, parse_study
from ..train.config import read_yaml

#: first line of every study file ``plan design`` writes (such a file may be replaced by the next plan)
MARKER = "# written by symscale plan design"
_STAND_IN = "0" * 64   # run ids are compared at a fixed data fingerprint: only the settings differ


@dataclass
class Study:
    """A study: its settings ``raw`` (the YAML mapping) and ``cfg``, its directory, and where it came from."""

    raw: dict
    cfg: StudyConfig
    dir: Path
    source: str

    def has_runs(self) -> bool:
        """Whether the study directory holds a store (the study was started)."""
        return (self.dir / "study.db").is_file()

    def run_ids(self) -> list[str] | None:
        """The run ids of the study's last invocation (None: every run of the store)."""
        from ..study.store import Store

        with Store(self.dir, create=False) as store:
            return (store.meta("study") or {}).get("run_ids")

    def data_path(self) -> str | None:
        from ..study.datasets import data_path

        return data_path(self.cfg, self.dir)

    def token_limits(self) -> tuple[int, float]:
        """(atoms of one epoch of the training split, mean atoms per training structure)."""
        from ..data import open_dataset

        try:
            ds = open_dataset(self.data_path())
        except (DataError, ConfigError) as exc:
            raise DataError(f"{self.source}: cannot open the study's data to size the runs ({exc})") from None
        n_atoms = ds.n_atoms[ds.split("train")]
        return int(n_atoms.sum()), float(n_atoms.mean())

    def ids(self, cfg: StudyConfig | None = None) -> list[str]:
        """Run ids of ``cfg`` (default: this study) in this study's directory, at a fixed data fingerprint."""
        return [p.id for p in expand(cfg or self.cfg, self.data_path(), self.dir, source=self.source,
                                     fingerprint=_STAND_IN)]


def read_study(path: str | Path) -> Study:
    """The study of a YAML file or a study directory (module docstring); one-line ConfigError otherwise.

    A directory must hold the driver's ``study.yaml`` and ``study.db``; a YAML file's directory need not exist
    (``plan design`` then runs a pilot).
    """
    p = Path(path)
    if p.is_dir():
        f = p / "study.yaml"
        if not f.is_file() or not (p / "study.db").is_file():
            raise ConfigError(f"{p}: not a study directory (no study.yaml and study.db); give a study's directory, "
                              "or its YAML file to start it with a pilot")
        raw = read_yaml(f, "study file")
        return Study(raw=raw, cfg=parse_study(raw, source=str(f)), dir=p, source=str(f))
    if not p.is_file():
        raise ConfigError(f"{p}: no such study file or directory")
    if p.suffix.lower() == ".json":
        raise ConfigError(f"{p}: a fit document cannot be extended; give the study (its YAML file or directory)")
    raw = read_yaml(p, "study file")
    cfg = parse_study(raw, source=str(p))
    return Study(raw=raw, cfg=cfg, dir=cfg.study_dir(), source=str(p))


def check_out(path: str | Path, flag: str = "--out") -> Path:
    """Check that the study file ``path`` may be written: new, or a file ``plan design`` wrote (:data:`MARKER`)."""
    p = Path(path)
    if p.is_file() and not p.is_symlink():
        try:
            with open(p, encoding="utf-8") as fh:
                if fh.readline().rstrip("\n") == MARKER:
                    return p
        except (OSError, UnicodeDecodeError):
            pass
    return check_output_file(p, "plan-design", flag=flag, suffixes=(".yaml", ".yml"))


def extended(study: Study, new: dict[str, dict[int, int]], longer: dict[str, dict[int, int]] | None = None) -> dict:
    """The YAML mapping of ``study`` with ``new[group] = {width: tokens}`` added and the widths of
    ``longer[group] = {width: tokens}`` (widths of the study) given their new budgets (module docstring)."""
    raw = copy.deepcopy(study.raw)
    longer = longer or {}
    by_group = {a.group(): i for i, a in enumerate(study.cfg.architectures)}
    unknown = sorted((set(new) | set(longer)) - set(by_group))
    if unknown:
        raise ConfigError(f"{study.source}: no architecture entry for group {unknown[0]!r}")
    for group in sorted(set(new) | set(longer)):
        widths, raised = new.get(group, {}), longer.get(group, {})
        if not widths and not raised:
            continue
        i = by_group[group]
        arch, entry = study.cfg.architectures[i], raw["architectures"][i]
        clash = sorted(set(widths) & set(arch.widths))
        if clash:
            raise ConfigError(f"{study.source}: architectures.{i}: width {clash[0]} is already in the study")
        missing = sorted(set(raised) - set(arch.widths))
        if missing:
            raise ConfigError(f"{study.source}: architectures.{i}: width {missing[0]} is not in the study: "
                              "nothing to train longer")
        tokens = dict(arch.tokens) if isinstance(arch.tokens, dict) else (
            {w: arch.tokens for w in arch.widths} if arch.tokens is not None else {})
        tokens.update({int(w): int(t) for w, t in widths.items()})
        tokens.update({int(w): int(t) for w, t in raised.items()})
        entry["widths"] = sorted(arch.widths + [int(w) for w in widths])
        entry["tokens"] = dict(sorted(tokens.items()))
        if study.cfg.mup:
            entry["base_width"] = arch.base_width or arch.widths[0]
        if study.cfg.tune is not None and study.cfg.tune.check_transfer:
            # the transfer check stays where it was swept: a sweep at each new widest width would cost
            # len(grid) runs at the study's most expensive size, which the plan did not budget
            entry["transfer_width"] = arch.check_width
    out = raw.get("out")
    if out is None or Path(out).resolve() != study.dir.resolve():
        raw["out"] = str(study.dir)
    return raw


def check_extension(study: Study, raw: dict, n_new: int, source: str, n_replaced: int = 0) -> StudyConfig:
    """Parse ``raw`` back and check that every run of ``study`` keeps its id but the ``n_replaced`` runs of
    widths trained longer, and that ``n_new`` runs are added."""
    cfg = parse_study(raw, source=source)
    before, after = set(study.ids()), set(study.ids(cfg))
    lost = sorted(before - after)
    if len(lost) != n_replaced or len(after - before) != n_new:
        raise ConfigError(f"{source}: the extended study would not keep the study's runs ({len(lost)} run id(s) "
                          f"changed for {n_replaced} replaced, {len(after - before)} new for {n_new} planned); "
                          "nothing written")
    return cfg


def write_extension(study: Study, plan, out: Path, header: str) -> Path:
    """Write the study file of ``plan`` (a :class:`~.search.Plan`) to ``out`` after :func:`check_extension`."""
    from .design import format_widths

    new: dict[str, dict[int, int]] = {}
    longer: dict[str, dict[int, int]] = {}
    for o in plan.chosen:
        (longer if o.replaces else new).setdefault(o.group, {})[o.width] = o.tokens
    raw = extended(study, new, longer)
    seeds = len(study.cfg.seeds)
    n_longer = sum(len(w) for w in longer.values())
    check_extension(study, raw, (sum(len(w) for w in new.values()) + n_longer) * seeds, str(out), n_longer * seeds)
    lines = [MARKER, f"# from {study.source} (study directory {study.dir}); {header}",
             "# new widths (group, width, N, tokens, cost):"]
    lines += [f"#   {o.group} {o.width} {o.N:.4g} {o.tokens} {o.cost:.3g}" for o in plan.chosen if not o.replaces]
    if n_longer:
        lines.append("# finished widths trained longer, replacing their runs (group, width, N, tokens, cost):")
        lines += [f"#   longer {o.group} {o.width} {o.N:.4g} {o.tokens} {o.cost:.3g}" for o in plan.chosen if o.replaces]
    lines.append("# predicted 95% interval widths of alpha, beta, a (now -> after):")
    lines += [f"#   {g}: {format_widths(plan.before[g], plan.after[g])}" for g in plan.before]
    text = "\n".join(lines) + "\n" + yaml.safe_dump(raw, sort_keys=False, default_flow_style=None, width=110)
    return write_text(out, text)

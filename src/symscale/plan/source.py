"""The planner's input: a fit document (``symscale fit --json``) and the fitted sum law of each group in it.

:func:`load_fit` accepts

- a **study directory** (it holds ``study.db``): its fit document (``laws.json``, else ``report/fit.json``,
  written by the study) when it describes the store as it is now -- the same runs, each with the same number
  of fitted checkpoints, last token count and best loss, fitted with the study's ``report`` settings -- and
  carries the planner's keys (``replicates``, ``throughput``: written since ``symscale plan`` exists);
  otherwise the study's runs are fitted again here, with those settings (bootstrap, seed, warm-up drop,
  hold-out), exactly as the study does -- nothing is written into the study. The check reads the runs, not
  modification times, which a copied study directory does not keep in order;
- a directory written by ``symscale fit --plots`` (it holds ``fit.json``);
- a ``fit.json`` / ``fit --json`` file.

Anything else is a one-line :class:`~symscale.errors.DataError` naming the path.

:func:`group_laws` reads each group's law into a :class:`GroupLaw`: the full-data point fit (the ``value``
of the Q objects ``L_inf``, ``A``, ``B``, ``alpha``, ``beta``), κ, the bootstrap replicates of the five
parameters and the measured throughput (:mod:`symscale.laws.throughput`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..laws import throughput as _throughput

#: The sum-law parameters in the column order of :attr:`GroupLaw.replicates`.
PARAMS = ("L_inf", "A", "B", "alpha", "beta")
#: The keys every group of a fit document written since the planner exists carries.
PLANNER_KEYS = ("replicates", "throughput")


@dataclass(frozen=True)
class GroupLaw:
    """One group's fitted L(N, D) = L_inf + A·N^(−alpha) + B·D^(−beta), as the planner uses it.

    Attributes:
        name: group name. L_inf, A, B, alpha, beta: the full-data point fit. kappa: FLOPs per parameter per
            atom (C = 3·kappa·N·D). replicates: (R, 5) bootstrap replicates in the order :data:`PARAMS`
            (NaN where a replicate does not identify a parameter), or None when the document has none.
        identified: ``{parameter: bool}`` for the five parameters (the Q objects' ``identified``).
        throughput: the group's ``"throughput"`` entry (:mod:`symscale.laws.throughput`), or None.
        ci_widths: (3,) widths of the document's 95 % intervals of α, β and a (NaN where a quantity is not
            identified or has no interval): what the planner calibrates its predicted widths on.
    """

    name: str
    L_inf: float
    A: float
    B: float
    alpha: float
    beta: float
    kappa: float
    replicates: np.ndarray | None
    identified: dict
    throughput: dict | None
    ci_widths: tuple = (float("nan"),) * 3

    @property
    def all_identified(self) -> bool:
        """Whether every parameter of the law is identified."""
        return all(self.identified.get(k, False) for k in PARAMS)

    def loss(self, N, D):
        """The point fit's L(N, D) (elementwise)."""
        N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
        return self.L_inf + self.A * np.power(N, -self.alpha) + self.B * np.power(D, -self.beta)

    def params(self) -> np.ndarray:
        """(1, 5) point fit in the order :data:`PARAMS`."""
        return np.array([[getattr(self, k) for k in PARAMS]])


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:   # invalid JSON, or not UTF-8 text
        raise DataError(f"{path}: not a fit document (invalid JSON: {getattr(exc, 'msg', 'not UTF-8 text')})") from None
    groups = doc.get("groups") if isinstance(doc, dict) else None
    if not isinstance(groups, dict) or not groups or not all(isinstance(g, dict) for g in groups.values()):
        raise DataError(f"{path}: not a fit document (no 'groups' object with one entry per group; "
                        "write one with `symscale fit --json`)")
    return doc


def _study_groups(study_dir: Path):
    """The study's report settings, its name and its groups as its report fits them (the last invocation's
    runs, warm-up checkpoints dropped), as :func:`symscale.study.driver.write_study_report` reads them."""
    from ..study.schema import ReportSpec
    from ..study.store import Store, load_groups

    with Store(study_dir, create=False) as store:
        meta = store.meta("study") or {}
    try:
        spec = ReportSpec(**((meta.get("config") or {}).get("report") or {}))
    except ValueError as exc:
        raise DataError(f"{study_dir / 'study.db'}: the study's report settings are invalid "
                        f"({' '.join(str(exc).split())})") from None
    return spec, meta.get("name"), spec.drop_warmup(load_groups(study_dir, meta.get("run_ids")))


def _describes(doc: dict, spec, groups: dict) -> bool:
    """Whether the fit document ``doc`` was fitted from ``groups`` with the settings ``spec``: the same groups,
    each with the same runs (name, fitted checkpoints, last token count, best loss), the same settings, and
    the planner's keys."""
    from ..laws.bootstrap import run_inventory

    settings = doc.get("settings") or {}
    if any(settings.get(k) != v for k, v in spec.model_dump(mode="json").items()):
        return False
    if set(doc["groups"]) != set(groups):
        return False
    key = lambda r: (r.get("run"), r.get("n_points"), r.get("D_max"), r.get("best_loss"))  # noqa: E731
    for name, data in groups.items():
        g = doc["groups"][name]
        if not all(k in g for k in PLANNER_KEYS) or not isinstance(g.get("runs"), list):
            return False
        if sorted(map(key, g["runs"]), key=repr) != sorted(map(key, run_inventory(data)), key=repr):
            return False
    return True


def _fit_study(study_dir: Path, spec, name, groups) -> dict:
    """Fit the study's groups with its ``report`` settings (as :func:`write_study_report` does)."""
    from ..laws import analyse, to_json

    results = analyse(groups, n_boot=spec.bootstrap, seed=spec.seed, holdout=spec.holdout)
    return to_json(results, {"input": str(study_dir / "study.db"), "loss": "loss", "study": name,
                             **spec.model_dump(mode="json")})


def load_fit(path: str | Path) -> dict:
    """The fit document of a study directory, a ``fit --plots`` directory or a fit JSON file (module docstring).

    Raises:
        DataError: one line naming the path (missing, not JSON, not a fit document, not a study).
    """
    path = Path(path)
    if path.is_file():
        return _read_json(path)
    if not path.is_dir():
        raise DataError(f"{path}: no such file or directory")
    if (path / "study.db").is_file():
        spec, name, groups = _study_groups(path)
        for cand in (path / "laws.json", path / "report" / "fit.json"):
            if cand.is_file():
                doc = _read_json(cand)
                if _describes(doc, spec, groups):
                    return doc
        return _fit_study(path, spec, name, groups)
    if (path / "fit.json").is_file():
        return _read_json(path / "fit.json")
    raise DataError(f"{path}: not a study directory (study.db), a `fit --plots` directory (fit.json) "
                    f"or a fit JSON file (for other run directories: `symscale fit {path} --json fit.json`)")


def _number(x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v


def _group_law(name: str, g: dict, where: str) -> GroupLaw | None:
    """The :class:`GroupLaw` of group entry ``g``; None when the group has no fitted sum law.

    Raises:
        DataError: a malformed entry (missing parameter, κ, replicates or throughput unreadable).
    """
    vals, ident = {}, {}
    for k in PARAMS:
        q = g.get(k)
        if not isinstance(q, dict):
            raise DataError(f"{where}: group '{name}' has no '{k}' entry (not a group of a fit document)")
        vals[k] = _number(q.get("value"))
        ident[k] = bool(q.get("identified", True))
    if not all(math.isfinite(v) for v in vals.values()):
        return None
    kappa = _number(g.get("kappa"))
    if not (math.isfinite(kappa) and kappa > 0):
        raise DataError(f"{where}: group '{name}' has no usable 'kappa' ({g.get('kappa')!r})")
    reps = g.get("replicates")
    table = None
    if reps is not None:
        try:
            cols = [np.array([np.nan if v is None else float(v) for v in reps[k]], dtype=float) for k in PARAMS]
        except (TypeError, KeyError, ValueError):
            raise DataError(f"{where}: group '{name}': 'replicates' needs a list of numbers for each of "
                            f"{', '.join(PARAMS)}") from None
        if len({c.size for c in cols}) != 1:
            raise DataError(f"{where}: group '{name}': the 'replicates' lists differ in length")
        table = np.stack(cols, axis=1) if cols[0].size else None
    tp = g.get("throughput")
    if tp is not None:
        problem = _throughput.check_entry(tp, f"{where}: group '{name}'")
        if problem:
            raise DataError(problem)
    return GroupLaw(name=name, kappa=kappa, replicates=table, identified=ident, throughput=tp,
                    ci_widths=tuple(_ci_width(g.get(k)) for k in ("alpha", "beta", "a")), **vals)


def _ci_width(q) -> float:
    """Width of Q object ``q``'s interval; NaN when it is missing, not identified or not finite."""
    if not isinstance(q, dict) or not q.get("identified", True):
        return float("nan")
    w = _number(q.get("ci_high")) - _number(q.get("ci_low"))
    return w if math.isfinite(w) and w > 0 else float("nan")


NOT_FITTED = "has no fitted sum law L(N, D) (too few distinct (N, D) points; see its warnings in the fit)"


def group_laws(doc: dict, names: list[str] | None = None, *, where: str = "fit document") -> dict[str, GroupLaw]:
    """``{group: GroupLaw}`` for the groups of ``doc`` with a fitted sum law (all, or ``names`` in that order).

    Without ``names``, groups without a fitted sum law are left out (:func:`unfitted` lists them); ``where``
    names the input in messages.

    Raises:
        DataError: a name not in the document, a named group without a fitted law, no group with one, or a
            malformed entry.
    """
    groups = doc.get("groups") or {}
    unknown = [n for n in names or [] if n not in groups]
    if unknown:
        raise DataError(f"{where}: no group {', '.join(map(repr, unknown))} (groups: {', '.join(groups)})")
    out = {}
    for name in names or list(groups):
        law = _group_law(name, groups[name], where)
        if law is None and names:
            raise DataError(f"{where}: group '{name}' {NOT_FITTED}")
        if law is not None:
            out[name] = law
    if not out:
        raise DataError(f"{where}: no group has a fitted sum law L(N, D) (each needs more distinct (N, D) "
                        "points than the law has parameters)")
    return out


def unfitted(doc: dict, where: str = "fit document") -> list[str]:
    """The groups of ``doc`` that :func:`group_laws` leaves out (no fitted sum law)."""
    return [name for name, g in (doc.get("groups") or {}).items() if _group_law(name, g, where) is None]

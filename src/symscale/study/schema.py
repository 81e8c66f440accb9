"""The study schema: one YAML file describes a whole sweep (see ``examples/quickstart.yaml``).

A study is architectures × widths × seeds, all trained on one dataset with shared settings. Every section
forbids unknown keys, and validation failures become a one-line :class:`~symscale.errors.ConfigError`
naming the file and the field, e.g. ``study.yaml: architectures.0.widths: List should have at least 1 item``.

:func:`expand` turns a study into :class:`PlannedRun` objects. A run's id is a hash of its resolved
:class:`~symscale.train.config.RunConfig` (output directory and name excluded), so editing a study adds or
removes runs without touching the others: a run whose settings did not change keeps its id, its directory
and its results.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from ..errors import ConfigError
from ..data.neighbors import MAX_CUTOFF, MIN_CUTOFF
from ..train.config import (MAX_SEED, EvaluationConfig, LossConfig, OptimizerConfig, RunConfig, SymmetryConfig,
                            _format_errors, check_where, parse_config, read_yaml)
from ..train.metrics import variant_tag


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class GenerateSpec(_Strict):
    """Generate the study's data with GFN2-xTB (``symscale data generate``) into ``<study>/data`` once."""

    molecules: int = Field(50, ge=2)
    per_molecule: int = Field(60, ge=1)
    temperatures: list[float] = Field(default_factory=lambda: [300.0, 600.0, 1000.0], min_length=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    workers: int = Field(1, ge=1)
    stride: int = Field(10, ge=1)


class DataSpec(_Strict):
    """``path`` (a prepared directory or any raw source), ``embedded`` (the shipped GFN2-xTB set) or
    ``generate``; exactly one. ``where``: the subset to train on (``KEY OP VALUE`` conditions, all of which
    must hold, e.g. ``[charge==0, spin==1]``; with ``path`` or ``embedded``). A raw source, or any source with
    ``where``, is prepared once into ``<study>/prepared/<key>`` (see :mod:`symscale.study.datasets`).
    ``cutoff``, ``max_neighbors`` and ``val_size`` as in a run config."""

    path: str | None = None
    embedded: bool = False
    generate: GenerateSpec | None = None
    where: list[str] = Field(default_factory=list)
    cutoff: float = Field(5.0, ge=MIN_CUTOFF, le=MAX_CUTOFF)
    max_neighbors: int | None = Field(None, ge=1)
    val_size: int | None = Field(256, ge=1)

    @field_validator("where")
    @classmethod
    def _where(cls, v: list[str]) -> list[str]:
        return check_where(v)

    @model_validator(mode="after")
    def _one_source(self) -> "DataSpec":
        given = [k for k, v in (("path", self.path), ("embedded", self.embedded or None),
                                ("generate", self.generate)) if v is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of path, embedded, generate (got {', '.join(given) or 'none'})")
        if self.where and self.generate is not None:
            raise ValueError("where selects from a path or the embedded set; generate makes the data it is asked for")
        return self


_POSITIVE = TypeAdapter(Annotated[int, Field(ge=1)])


class Architecture(_Strict):
    """One family of the staircase at several widths. ``label`` names its group in the laws (default:
    the family, suffixed with the symmetry variant, e.g. ``mpnn-aug``); give distinct labels to two
    entries of one family (e.g. ``esen-l2`` and ``esen-l4``). The optional fields override the study's.
    ``tokens`` may also map some of the widths to their own budgets (``{64: 200000}``, written by ``symscale
    plan design``); a width it does not list trains for the entry's ``epochs``, else the study's budget.
    ``transfer_width``: the width at which ``tune:`` checks μP transfer (default: the widest; ``symscale
    plan design`` pins it to the widest width already swept when it adds wider ones)."""

    @property
    def check_width(self) -> int:
        """The width of the μP transfer check of ``tune:`` (``transfer_width``, else the widest)."""
        return self.transfer_width or self.widths[-1]

    family: str
    widths: list[int] = Field(..., min_length=1)
    label: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
    options: dict[str, Any] = Field(default_factory=dict)
    symmetry: SymmetryConfig = Field(default_factory=SymmetryConfig)
    optimizer: dict[str, Any] = Field(default_factory=dict)
    tokens: int | dict[int, int] | None = None
    epochs: float | None = Field(None, gt=0, le=1e6)
    batch_size: int | None = Field(None, ge=1)
    base_width: int | None = Field(None, ge=1)
    transfer_width: int | None = Field(None, ge=1)

    @field_validator("tokens", mode="before")
    @classmethod
    def _tokens(cls, v: Any) -> int | dict[int, int] | None:
        """An integer >= 1, or ``{width: integer >= 1}`` (widths checked against ``widths`` below)."""
        try:
            if isinstance(v, dict):
                return {_POSITIVE.validate_python(k): _POSITIVE.validate_python(t) for k, t in v.items()}
            return None if v is None else _POSITIVE.validate_python(v)
        except ValidationError as exc:
            raise ValueError(f"{exc.errors()[0]['msg']} (an integer >= 1, or a mapping width: integer >= 1)") from None

    @model_validator(mode="after")
    def _token_widths(self) -> "Architecture":
        if self.transfer_width is not None and self.transfer_width not in self.widths:
            raise ValueError(f"transfer_width: {self.transfer_width} is not one of the widths {self.widths}")
        if isinstance(self.tokens, dict):
            extra = sorted(set(self.tokens) - set(self.widths))
            if extra:
                raise ValueError(f"tokens: width {extra[0]} is not one of the widths {self.widths}")
        return self

    def budget(self, width: int, tokens: int | None, epochs: float | None) -> tuple[int | None, float | None]:
        """(tokens, epochs) of ``width``: its entry in a ``tokens`` mapping, else the entry's ``tokens`` /
        ``epochs``, else the study's (``tokens``, ``epochs``)."""
        if isinstance(self.tokens, dict):
            if width in self.tokens:
                return self.tokens[width], None
            return (None, self.epochs) if self.epochs else (tokens, epochs)
        return (self.tokens, self.epochs) if (self.tokens or self.epochs) else (tokens, epochs)

    @field_validator("widths")
    @classmethod
    def _widths(cls, v: list[int]) -> list[int]:
        if any(w < 1 for w in v) or len(set(v)) != len(v):
            raise ValueError("widths must be distinct integers >= 1")
        return sorted(v)

    @field_validator("family")
    @classmethod
    def _family(cls, v: str) -> str:
        from ..models import available

        if v not in available():
            raise ValueError(f"unknown family {v!r} (choose from {', '.join(available())})")
        return v

    def group(self) -> str:
        if self.label:
            return self.label
        tag = variant_tag(self.symmetry)
        return f"{self.family}-{tag}" if tag else self.family


class ReportSpec(_Strict):
    """Settings of the fits that end the study (see ``symscale fit``)."""

    bootstrap: int = Field(1000, ge=0)
    drop_fraction: float = Field(0.05, ge=0, lt=1)
    drop_tokens: float = Field(0.0, ge=0)
    holdout: float = Field(0.2, gt=0, lt=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)

    def drop_warmup(self, groups: dict) -> dict:
        """``groups`` (``{name: GroupData}``) minus the checkpoints the fits drop (``drop_fraction`` of each
        run, and everything before ``drop_tokens`` atoms: :func:`symscale.laws.drop_warmup`)."""
        from ..laws import drop_warmup

        return {name: drop_warmup(g, self.drop_fraction, self.drop_tokens) for name, g in groups.items()}


class TuneSpec(_Strict):
    """A learning-rate sweep that runs before the study (``tune:``; :mod:`symscale.study.tune`).

    The grid is ``lrs`` (explicit, at least two) or ``points`` values log-spaced from ``lr_min`` to
    ``lr_max`` (rounded to 3 significant digits). Each architecture trains once per grid value at its μP
    base width (``base_width``, else its smallest width) for ``max(fractions)`` of that width's budget; the
    validation loss is read at every fraction of ``fractions`` from the same runs, and the best value at the
    largest fraction becomes the architecture's learning rate at every width. ``check_transfer``: sweep the
    widest width too and report whether its best value lies within one grid step of the base width's.
    ``extend``: when a group's best value is at an end of its grid, sweep one more value past that end (the
    grid's ratio between its two outermost values there) and choose again, at most this many times per group.
    """

    lrs: list[Annotated[float, Field(gt=0)]] | None = Field(None, min_length=2)
    lr_min: float | None = Field(None, gt=0)
    lr_max: float | None = Field(None, gt=0)
    points: int = Field(5, ge=2, le=50)
    fractions: list[Annotated[float, Field(gt=0, le=1)]] = Field(default_factory=lambda: [0.1, 0.25],
                                                                  min_length=1)
    check_transfer: bool = True
    extend: int = Field(0, ge=0, le=5)

    @model_validator(mode="after")
    def _grid(self) -> "TuneSpec":
        ranged = self.lr_min is not None or self.lr_max is not None
        if (self.lrs is None) == (not ranged):
            raise ValueError("give either lrs or lr_min and lr_max")
        if self.lrs is not None:
            if "points" in self.model_fields_set:
                raise ValueError("points: only with lr_min and lr_max (lrs is the grid)")
            if len(set(self.lrs)) != len(self.lrs):
                raise ValueError("lrs: values must be distinct")
        elif self.lr_min is None or self.lr_max is None:
            raise ValueError(f"{'lr_max' if self.lr_max is None else 'lr_min'}: missing (lr_min and lr_max "
                             f"go together)")
        elif not self.lr_min < self.lr_max:
            raise ValueError(f"lr_min ({self.lr_min:g}) must be below lr_max ({self.lr_max:g})")
        elif len(set(self.grid())) != self.points:
            raise ValueError(f"points: {self.points} values between {self.lr_min:g} and {self.lr_max:g} are not "
                             f"distinct at 3 significant digits")
        if len(set(self.fractions)) != len(self.fractions):
            raise ValueError("fractions: values must be distinct")
        return self

    def grid(self) -> list[float]:
        """The learning rates of the sweep, ascending."""
        if self.lrs is not None:
            return sorted(self.lrs)
        ratio = self.lr_max / self.lr_min
        return [float(f"{self.lr_min * ratio ** (i / (self.points - 1)):.3g}") for i in range(self.points)]


class StudyConfig(_Strict):
    """A scaling study. Budget per run: ``tokens`` (atoms) or ``epochs`` (default: one epoch)."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    out: str | None = None
    data: DataSpec
    architectures: list[Architecture] = Field(..., min_length=1)
    tokens: int | None = Field(None, ge=1)
    epochs: float | None = Field(None, gt=0, le=1e6)
    batch_size: int = Field(16, ge=1)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    mup: bool = True
    loss: LossConfig = Field(default_factory=LossConfig)
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(default_factory=lambda: [0], min_length=1)
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    dtype: Literal["float32", "float64", "bfloat16"] = "float32"
    tf32: bool = False
    loader_workers: int = Field(0, ge=0, le=64)
    compile: bool | Literal["auto"] = False
    max_retries: int = Field(2, ge=0)
    report: ReportSpec = Field(default_factory=ReportSpec)
    tune: TuneSpec | None = None

    @field_validator("tune")
    @classmethod
    def _tuned_lr(cls, v: TuneSpec | None, info: ValidationInfo) -> TuneSpec | None:
        """With ``tune`` the learning rate comes from the sweep: an explicit one would do nothing."""
        if v is not None:
            opt = info.data.get("optimizer")
            if opt is not None and "lr" in opt.model_fields_set:
                raise ValueError("optimizer.lr is set, but with tune the sweep chooses the learning rate; "
                                 "remove one of them")
            for i, arch in enumerate(info.data.get("architectures") or []):
                if "lr" in arch.optimizer:
                    raise ValueError(f"architectures.{i}.optimizer.lr is set, but with tune the sweep chooses "
                                     f"the learning rate; remove one of them")
        return v

    @model_validator(mode="after")
    def _check(self) -> "StudyConfig":
        if self.tokens is not None and self.epochs is not None:
            raise ValueError("give either tokens or epochs, not both")
        groups = [a.group() for a in self.architectures]
        dup = sorted({g for g in groups if groups.count(g) > 1})
        if dup:
            raise ValueError(f"architectures: group {dup[0]!r} appears twice; give the entries distinct labels")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct")
        return self

    def study_dir(self) -> Path:
        return Path(self.out or Path("runs") / self.name)


@dataclass(frozen=True)
class PlannedRun:
    """One run of the study: its stable ``id``, laws group and resolved run configuration."""

    id: str
    group: str
    family: str
    width: int
    seed: int
    config: RunConfig
    run_dir: Path

    def job(self) -> dict:
        """What an executor needs: plain JSON-able data (sent to worker processes and Ray tasks)."""
        return {"run_id": self.id, "group": self.group, "config": self.config.model_dump(mode="json"),
                "run_dir": str(self.run_dir)}


def load_study_config(path: str | os.PathLike) -> StudyConfig:
    """Read a study YAML with ``yaml.safe_load`` and validate it (one-line ConfigError on any problem)."""
    return parse_study(read_yaml(path, "study file"), source=str(path))


def parse_study(data: Any, source: str = "study") -> StudyConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of study settings, got {type(data).__name__}")
    if data.get("data") == "embedded":  # shorthand
        data = {**data, "data": {"embedded": True}}
    elif isinstance(data.get("data"), str):
        data = {**data, "data": {"path": data["data"]}}
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_format_errors(exc)}") from None


def expand(study: StudyConfig, data_path: str | None, study_dir: Path | None = None,
           source: str = "study", fingerprint: str | None = None) -> list[PlannedRun]:
    """All runs of ``study`` (architecture order, then width, then seed) with stable ids.

    ``data_path`` is the resolved dataset (``None`` = embedded); ``fingerprint`` its content fingerprint
    (computed when not given). The data enter a run's id through the fingerprint, not the path: data edited
    in place give new runs, a moved copy keeps them; each run also checks the fingerprint when it starts.
    μP: with ``mup: true`` every width of an architecture trains with hidden learning rates scaled from its
    smallest width (or ``base_width``).
    """
    if fingerprint is None:
        from ..data import open_dataset

        fingerprint = open_dataset(data_path).fingerprint
    study_dir = Path(study_dir) if study_dir is not None else study.study_dir()
    runs: list[PlannedRun] = []
    for i, arch in enumerate(study.architectures):
        group = arch.group()
        opt = {**study.optimizer.model_dump(mode="json"), **arch.optimizer}
        for width in arch.widths:
            tokens, epochs = arch.budget(width, study.tokens, study.epochs)
            for seed in study.seeds:
                cfg = {
                    "group": group,
                    "data": {"path": data_path, "fingerprint": fingerprint, "cutoff": study.data.cutoff,
                             "max_neighbors": study.data.max_neighbors, "val_size": study.data.val_size},
                    "model": {"family": arch.family, "width": width, "options": dict(arch.options)},
                    "batch_size": arch.batch_size or study.batch_size,
                    "tokens": tokens, "epochs": epochs,
                    "evaluation": study.evaluation.model_dump(mode="json"),
                    "optimizer": opt,
                    "mup": {"base_width": arch.base_width or arch.widths[0]} if study.mup else None,
                    "loss": study.loss.model_dump(mode="json"),
                    "symmetry": arch.symmetry.model_dump(mode="json"),
                    "seed": seed, "device": study.device, "dtype": study.dtype,
                }
                if study.tf32:  # only when on: ids from before the option stay the same
                    cfg["tf32"] = True
                ident = dict(cfg, data={k: v for k, v in cfg["data"].items() if k != "path"})
                digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
                run_id = f"{group}-w{width}-s{seed}-{digest}"
                run_dir = study_dir / "runs" / run_id
                config = parse_config({**cfg, "loader_workers": study.loader_workers,  # these two: not in the id
                                       "compile": study.compile,
                                       "name": run_id, "out": str(run_dir)},
                                      source=f"{source}: architectures.{i}")
                runs.append(PlannedRun(run_id, group, arch.family, width, seed, config, run_dir))
    return runs

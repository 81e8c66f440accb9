"""The run schema: one YAML file describes one training run (see ``examples/run.yaml``).

Every section forbids unknown keys, so a typo is an error rather than a silently ignored setting.
Validation failures become a one-line :class:`~symscale.errors.ConfigError` naming the field, e.g.
``run.yaml: optimizer.lr: Input should be greater than 0``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ..data.neighbors import MAX_CUTOFF, MIN_CUTOFF
from ..errors import ConfigError
from ..limits import MAX_SEED


#: Run names become directory names: no path separators, no leading dot.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DataConfig(_Strict):
    """Where the structures come from and how they become graphs.

    ``path``: a prepared directory or any raw source :func:`symscale.data.open_dataset` accepts;
    ``null`` = the embedded default dataset. ``val_size`` caps the validation subset (a fixed seeded
    choice of ``val_size`` structures of the ``val`` split; ``null`` = the whole split). ``subset``: train
    on a fixed seeded subset of the training split, a count of structures (int) or a fraction (float in
    (0, 1]); combine with ``epochs`` > 1 for multi-epoch runs. ``fingerprint``: the content fingerprint
    (SHA-256, :mod:`symscale.data.fingerprint`) the data must have; filled in from the data when a run
    starts, so a run (and a resume) never silently trains on data that changed. ``where``: train on the
    structures satisfying every condition (``KEY OP VALUE``, e.g. ``charge==0``; see
    :mod:`symscale.data.select`): the source is then prepared with that selection into a temporary directory
    when the run starts.
    """

    path: str | None = None
    where: list[str] = Field(default_factory=list)
    fingerprint: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    cutoff: float = Field(5.0, ge=MIN_CUTOFF, le=MAX_CUTOFF)
    max_neighbors: int | None = Field(None, ge=1)
    val_size: int | None = Field(256, ge=1)
    subset: int | float | None = None

    @field_validator("where")
    @classmethod
    def _where(cls, v: list[str]) -> list[str]:
        return check_where(v)

    @field_validator("subset")
    @classmethod
    def _subset(cls, v: int | float | None) -> int | float | None:
        if (isinstance(v, int) and v < 1) or (isinstance(v, float) and not 0 < v <= 1):
            raise ValueError(f"must be a count >= 1 or a fraction in (0, 1], got {v!r}")
        return v


def check_where(conditions: list[str]) -> list[str]:
    """``conditions`` in canonical form (``charge==0``); ValueError naming the first invalid one."""
    from ..data.select import parse_condition

    try:
        return [parse_condition(c, label=str(i)).text for i, c in enumerate(conditions)]
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


class ModelConfig(_Strict):
    """An architecture of the staircase and its width knob; ``options`` go to ``symscale.models.build``."""

    family: str = "mpnn"
    width: int = Field(64, ge=1)
    options: dict[str, Any] = Field(default_factory=dict)


class EvaluationConfig(_Strict):
    """``points`` evaluations at log-spaced token counts from ``first_tokens`` (default: the budget
    divided by 1000, at least one batch) to the budget, plus one at the end of training."""

    points: int = Field(20, ge=1)
    first_tokens: int | None = Field(None, ge=1)


class OptimizerConfig(_Strict):
    """``schedulefree`` (schedule-free AdamW, built-in linear warmup, no decay) or ``adamw``
    (AdamW, linear warmup then cosine decay in *tokens* down to ``min_lr_ratio * lr``).

    ``grad_clip``: clip the global gradient norm (``null`` = no clipping). A gradient norm that is not
    finite or exceeds ``diverge_grad_norm`` ends the run as ``diverged``.
    """

    name: Literal["schedulefree", "adamw"] = "schedulefree"
    lr: float = Field(5e-3, gt=0)  # evidence: docs/models.md, "Initialisation and trainability"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(10, ge=0)
    grad_clip: float | None = Field(10.0, gt=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    diverge_grad_norm: float = Field(1e6, gt=0)

    @model_validator(mode="after")
    def _betas(self) -> "OptimizerConfig":
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError("betas must lie in [0, 1)")
        return self


class MupConfig(_Strict):
    """μP-style learning-rate transfer: hidden matrices get ``lr * base_width / width``; every other
    parameter keeps ``lr`` (``null`` = ``optimizer.lr``). See :func:`symscale.train.optim.hidden_parameters`."""

    base_width: int = Field(..., ge=1)
    lr: float | None = Field(None, gt=0)


class LossConfig(_Strict):
    """Energy and force terms on normalised quantities (see :mod:`symscale.train.loss`)."""

    energy_weight: float = Field(1.0, ge=0)
    force_weight: float = Field(1.0, ge=0)
    energy: Literal["mae", "mse"] = "mae"
    forces: Literal["l2", "mse"] = "l2"

    @model_validator(mode="after")
    def _some_weight(self) -> "LossConfig":
        if self.energy_weight == 0 and self.force_weight == 0:
            raise ValueError("energy_weight and force_weight cannot both be 0")
        return self


class SymmetryLossConfig(_Strict):
    rotations: int = Field(5, ge=1)
    weight: float = Field(1.0, gt=0)


class SymmetryConfig(_Strict):
    """``augment``: rotate every training structure randomly; ``loss``: add the rotated-consistency loss
    (``rotations`` extra forward passes); ``frame_averaging``: wrap the model in ``FrameAveraging``."""

    augment: bool = False
    loss: SymmetryLossConfig | None = None
    frame_averaging: bool = False


class RunConfig(_Strict):
    """One training run. Budget: ``tokens`` (atoms) or ``epochs`` (passes over the training data, or
    over ``data.subset``; fractions allowed); neither = one epoch. ``group``: the laws group the run
    belongs to (default: the family plus its symmetry/data-reuse variant tag). Precision (``dtype``,
    ``tf32``): :mod:`symscale.train.precision`. ``loader_workers``: background processes building batches
    ahead (:mod:`symscale.data.prefetch`; the same batches in the same order whatever the number).
    ``compile``: ``torch.compile`` the training forward (``true``), never (``false``, default), or ``"auto"``:
    decided after a few timed eager steps, when the projected saving pays back the compile time
    (:mod:`symscale.train.compile`; conservative-force models are never compiled)."""

    name: str | None = Field(None, pattern=NAME_PATTERN, max_length=200)
    group: str | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    batch_size: int = Field(64, ge=1)
    tokens: int | None = Field(None, ge=1)
    epochs: float | None = Field(None, gt=0, le=1e6)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    mup: MupConfig | None = None
    loss: LossConfig = Field(default_factory=LossConfig)
    symmetry: SymmetryConfig = Field(default_factory=SymmetryConfig)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "float64", "bfloat16"] = "float32"
    tf32: bool = False
    loader_workers: int = Field(0, ge=0, le=64)
    compile: bool | Literal["auto"] = False
    out: str | None = None

    @model_validator(mode="after")
    def _budget(self) -> "RunConfig":
        if self.tokens is not None and self.epochs is not None:
            raise ValueError("give either tokens or epochs, not both")
        return self

    @field_validator("tf32")
    @classmethod
    def _tf32(cls, v: bool, info: ValidationInfo) -> bool:
        dtype, device = info.data.get("dtype"), info.data.get("device")
        if v and (dtype == "float64" or device == "cpu"):
            raise ValueError(f"TF32 matmuls are a CUDA float32 mode; they cannot apply with "
                             f"{'dtype: float64' if dtype == 'float64' else 'device: cpu'}")
        return v

    # ------------------------------------------------------------------ derived
    @property
    def loader_epochs(self) -> int:
        """Whole passes the data loader must be able to deliver for the budget."""
        return max(1, math.ceil(self.epochs)) if self.epochs is not None else 1

    def run_id(self) -> str:
        """``name`` or ``<family>-w<width>-<8 hex digits of the config hash>``."""
        if self.name:
            return self.name
        # loader_workers and compile change how batches are built and steps are run, not what is trained
        dump = self.model_dump(mode="json", exclude={"out", "name", "group", "loader_workers", "compile"})
        if not dump["data"]["where"]:  # ids of runs from before selections existed stay the same
            del dump["data"]["where"]
        if not dump["tf32"]:  # nor those of runs from before the tf32 option
            del dump["tf32"]
        blob = json.dumps(dump, sort_keys=True)
        return f"{self.model.family}-w{self.model.width}-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _format_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ())) or "<root>"
        msg = str(err.get("msg", "invalid")).replace("Value error, ", "")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts).replace("\n", " ")


def parse_config(data: Any, source: str = "config") -> RunConfig:
    """Validate a mapping (e.g. parsed YAML) into a :class:`RunConfig`.

    Raises:
        ConfigError: one line, ``<source>: <field>: <problem>``.
    """
    if isinstance(data, RunConfig):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of run settings, got {type(data).__name__}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_format_errors(exc)}") from None


def read_yaml(path: str | os.PathLike, what: str = "run config") -> Any:
    """``yaml.safe_load`` of a file; unreadable files and YAML syntax errors become a one-line ConfigError
    naming the file (and the line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: {what} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                          f"{exc.start}); is it a binary file?") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} invalid YAML ({getattr(exc, 'problem', None) or exc})") from None


def load_config(path: str | os.PathLike) -> RunConfig:
    """Read a run YAML file with ``yaml.safe_load`` and validate it."""
    return parse_config(read_yaml(path, "run config"), source=str(path))

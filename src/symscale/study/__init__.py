"""Studies: a YAML sweep of architectures × widths × seeds, run locally or on Ray, stored in SQLite.

Modules: :mod:`.schema` (the study file, run expansion and stable ids), :mod:`.datasets` (the data the runs
read, generated or prepared once), :mod:`.store` (``study.db``), :mod:`.worker` (one run in a worker),
:mod:`.executor` (protocol + local processes), :mod:`.ray_backend` (Ray), :mod:`.driver` (``run_study``),
:mod:`.display`, :mod:`.cli`.
"""

from .driver import StudyResult, run_study
from .schema import PlannedRun, StudyConfig, expand, load_study_config, parse_study

__all__ = ["PlannedRun", "StudyConfig", "StudyResult", "expand", "load_study_config", "parse_study",
           "run_study"]

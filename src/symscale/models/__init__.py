"""The symmetry staircase: ``mpnn`` (unconstrained), ``gemnet`` (invariant, body order 4),
``egnn`` (E(3)-equivariant, l=1) and ``esen`` (SO(2) convolutions, l<=4), each with one width knob.

Families are imported lazily through :mod:`symscale.models.registry`::

    from symscale.models import build, available, count_parameters
    model = build("egnn", 64, forces="direct")
"""

from .layers import ForceFieldModel
from .registry import FAMILIES, available, build, count_parameters, model_class

__all__ = ["ForceFieldModel", "FAMILIES", "available", "build", "count_parameters", "model_class"]

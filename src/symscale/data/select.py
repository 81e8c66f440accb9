"""Subset selection while reading: ``where`` conditions of the form ``KEY OP VALUE``.

A condition is written ``KEY OP VALUE`` with ``OP`` one of ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` and
``~`` (regular expression, :func:`re.search`), e.g. ``charge==0``, ``spin == 1``,
``data_id~^(elytes|biomolecules)$``. A structure is kept when every condition holds.

``KEY`` is looked up in the row's key-value pairs, then its ``data`` dictionary (ASE databases, the OMol25
shards keep ``charge``, ``spin``, ``data_id`` and ``source`` there), then ``atoms.info`` (extended XYZ), and
there are two keys every structure has:

* ``n_atoms``: the number of atoms;
* ``elements``: the set of its elements; ``VALUE`` is a comma-separated list of symbols and the comparison
  is between sets: ``elements<=C,H,N,O`` (only these elements), ``elements>=C`` (contains carbon),
  ``elements==C,H`` (exactly these), ``<``/``>`` strict subset/superset, ``!=`` another set; ``~`` matches
  the symbols joined by commas in atomic-number order (``H,C,O``).

Comparisons: ``==``/``!=`` compare numerically when both sides are numbers, else as text; ``<``, ``<=``,
``>``, ``>=`` need numbers on both sides. Selection is strict: a structure whose row lacks a key that a
condition names is an error naming the source and the structure (a typo such as ``chrage==0`` stops the
preparation at the first row instead of silently selecting nothing), and so is a value that an ordering
cannot compare.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from ..errors import ConfigError
from .validate import structure_error

#: Operators, longest first so that ``<=`` is not read as ``<``.
OPS = ("==", "!=", "<=", ">=", "<", ">", "~")
#: Keys every structure has, computed from its atoms.
BUILTIN_KEYS = ("n_atoms", "elements")
_SYNTAX = re.compile(r"^\s*([^\s=!<>~]+)\s*(==|!=|<=|>=|<|>|~)\s*(.*?)\s*$", re.S)
_ORDER = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def _number(text: str) -> int | float | None:
    """``text`` as an int or a finite float, else ``None``."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Condition:
    """One parsed ``KEY OP VALUE`` condition; :meth:`holds` tests a value found under ``key``."""

    key: str
    op: str
    value: str
    number: int | float | None = None
    pattern: re.Pattern | None = field(default=None, compare=False)
    elements: frozenset[int] | None = None

    @property
    def text(self) -> str:
        return f"{self.key}{self.op}{self.value}"

    def holds(self, value: Any, source: str, index: int) -> bool:
        """Whether the condition holds for ``value`` (structure ``index`` of ``source``, for messages)."""
        if self.key == "elements":
            return self._holds_for_set(frozenset(int(z) for z in value))
        if isinstance(value, np.generic):
            value = value.item()
        if self.op == "~":
            return self.pattern.search(str(value)) is not None
        is_num = isinstance(value, (int, float))  # bool included: True == 1
        if self.op in ("==", "!="):
            same = (float(value) == self.number) if (is_num and self.number is not None) else str(value) == self.value
            return same if self.op == "==" else not same
        if not is_num:
            found = _number(value) if isinstance(value, str) else None
            if found is None:
                raise structure_error(source, index, f"where {self.text!r}: {self.key} is {_show(value)}, "
                                                     f"not a number")
            value = found
        return _ORDER[self.op](float(value), self.number)

    def _holds_for_set(self, have: frozenset[int]) -> bool:
        want = self.elements
        if self.op == "~":
            return self.pattern.search(",".join(chemical_symbols[z] for z in sorted(have))) is not None
        return {"==": have == want, "!=": have != want, "<=": have <= want, "<": have < want,
                ">=": have >= want, ">": have > want}[self.op]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_condition(text: str, label: str = "--where") -> Condition:
    """Parse ``KEY OP VALUE``; a one-line :class:`ConfigError` starting with ``label`` otherwise."""
    if not isinstance(text, str):
        raise ConfigError(f"{label}: expected a condition 'KEY OP VALUE' as text, got {_show(text)}")
    m = _SYNTAX.match(text)
    if m is None:
        hint = " (use == for equality)" if re.match(r"^\s*[^\s=]+\s*=[^=]", text) else ""
        raise ConfigError(f"{label}: {text!r} is not a condition KEY OP VALUE with OP one of "
                          f"{' '.join(OPS)}{hint}")
    key, op, value = m.groups()
    if value == "" and op != "~":
        raise ConfigError(f"{label}: {text!r} has no value after {op}")
    pattern = number = elements = None
    if op == "~":
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise ConfigError(f"{label}: {text!r}: invalid regular expression ({exc})") from None
    if key == "elements" and op != "~":
        elements = frozenset(_element(s.strip(), text, label) for s in value.split(",") if s.strip())
        if not elements:
            raise ConfigError(f"{label}: {text!r}: give the elements as symbols separated by commas")
    elif op != "~":
        number = _number(value)
        if op in _ORDER and number is None:
            raise ConfigError(f"{label}: {text!r}: {op} compares numbers, and {value!r} is not one")
    return Condition(key, op, value, number, pattern, elements)


def _element(symbol: str, text: str, label: str) -> int:
    if symbol in atomic_numbers:
        return atomic_numbers[symbol]
    if symbol.isdigit() and 1 <= int(symbol) < len(chemical_symbols):
        return int(symbol)
    raise ConfigError(f"{label}: {text!r}: unknown element {symbol!r}")


class Selection:
    """All of some conditions (an empty selection keeps every structure).

    Args:
        conditions: condition texts (``"charge==0"``) or parsed :class:`Condition` objects.
        label: how the conditions are named in parse errors (``--where``, ``data.where``).
    """

    def __init__(self, conditions: Iterable[str | Condition] = (), label: str = "--where"):
        self.conditions: tuple[Condition, ...] = tuple(
            c if isinstance(c, Condition) else parse_condition(c, label) for c in (conditions or ()))

    @classmethod
    def of(cls, where: "Selection | Sequence[str] | None", label: str = "--where") -> "Selection":
        return where if isinstance(where, Selection) else cls(where or (), label)

    def __bool__(self) -> bool:
        return bool(self.conditions)

    def __repr__(self) -> str:
        return f"Selection({self.texts!r})"

    @property
    def texts(self) -> list[str]:
        """The conditions in canonical form (``charge==0``), as recorded in metadata."""
        return [c.text for c in self.conditions]

    def matches(self, numbers: np.ndarray, keys: Sequence[Mapping[str, Any]], source: str, index: int) -> bool:
        """Whether structure ``index`` of ``source`` (atomic ``numbers``; its row's dictionaries ``keys``,
        searched in order) satisfies every condition.

        Raises:
            DataError: a condition names a key the row does not have (the message lists the keys it has), or
            an ordering meets a value that is not a number.
        """
        for cond in self.conditions:
            if cond.key == "n_atoms":
                value: Any = len(numbers)
            elif cond.key == "elements":
                value = np.unique(numbers)
            else:
                value = _MISSING
                for d in keys:
                    if cond.key in d and d[cond.key] is not None:
                        value = d[cond.key]
                        break
                if value is _MISSING:
                    have = sorted({str(k) for d in keys for k in d} | set(BUILTIN_KEYS))
                    raise structure_error(source, index, f"where {cond.text!r}: no key {cond.key!r} in this row "
                                                         f"(keys: {', '.join(have)})")
            if not cond.holds(value, source, index):
                return False
        return True


_MISSING = object()

"""GFN2-xTB single points through tblite, in eV and eV/Å.

tblite works in atomic units (Bohr, Hartree, Hartree/Bohr); :class:`XTBLabeller` converts at the boundary so
the rest of symscale only ever sees Å, eV and eV/Å.
"""

from __future__ import annotations

import time

import numpy as np
from ase.units import Bohr, Hartree

#: Hartree/Bohr -> eV/Å.
HARTREE_PER_BOHR = Hartree / Bohr


class SCFError(RuntimeError):
    """The xTB self-consistent field did not converge (or tblite rejected the geometry)."""


class XTBLabeller:
    """A GFN2-xTB calculator bound to one molecule (fixed atomic numbers, charge 0, closed shell).

    Args:
        numbers: atomic numbers, shape ``(n,)``.
        positions: initial positions in Å, shape ``(n, 3)``.
        accuracy: tblite's SCF accuracy factor (1.0 = tblite default; smaller is tighter).
        reuse_wavefunction: start each SCF from the previous converged result (much faster along an MD
            trajectory; the converged answer is the same to within the SCF threshold).

    Attributes:
        n_singlepoints: number of single points attempted (successful or not).
        seconds: wall-clock time spent inside tblite (update + single point + reading results).
    """

    def __init__(self, numbers: np.ndarray, positions: np.ndarray, *, accuracy: float = 1.0,
                 reuse_wavefunction: bool = True) -> None:
        from tblite.interface import Calculator

        self.numbers = np.asarray(numbers, dtype=np.int32).reshape(-1)
        pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        self._calc = Calculator("GFN2-xTB", self.numbers, pos / Bohr, charge=0.0, uhf=0)
        self._calc.set("verbosity", 0)
        self._calc.set("accuracy", float(accuracy))
        self._reuse = bool(reuse_wavefunction)
        self._result = None
        self.n_singlepoints = 0
        self.seconds = 0.0

    def reset(self) -> None:
        """Forget the previous wavefunction (the next SCF starts from the default guess)."""
        self._result = None

    def __call__(self, positions: np.ndarray) -> tuple[float, np.ndarray]:
        """Energy (eV) and forces (eV/Å, shape ``(n, 3)``) at ``positions`` (Å).

        Raises:
            SCFError: when tblite fails (SCF not converged, or a degenerate geometry).
        """
        from tblite.exceptions import TBLiteRuntimeError, TBLiteValueError

        self.n_singlepoints += 1
        pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        start = time.perf_counter()
        try:
            self._calc.update(positions=pos / Bohr)
            if self._reuse and self._result is not None:
                result = self._calc.singlepoint(self._result)
            else:
                result = self._calc.singlepoint()
            energy = float(result.get("energy")) * Hartree
            forces = -np.asarray(result.get("gradient"), dtype=np.float64) * HARTREE_PER_BOHR
        except (TBLiteRuntimeError, TBLiteValueError) as exc:
            self._result = None  # a failed SCF leaves no usable restart guess
            raise SCFError(str(exc).splitlines()[0] if str(exc) else "tblite failed") from exc
        finally:
            self.seconds += time.perf_counter() - start
        if not (np.isfinite(energy) and np.all(np.isfinite(forces))):
            self._result = None
            raise SCFError("non-finite energy or forces")
        self._result = result if self._reuse else None
        return energy, forces


def min_distance(positions: np.ndarray) -> float:
    """Smallest interatomic distance in Å (``inf`` for a single atom)."""
    pos = np.asarray(positions, dtype=np.float64)
    if len(pos) < 2:
        return float("inf")
    diff = pos[:, None, :] - pos[None, :, :]
    dist = np.sqrt((diff * diff).sum(-1))
    dist[np.diag_indices(len(pos))] = np.inf
    return float(dist.min())

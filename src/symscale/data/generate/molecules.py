"""The shipped SMILES list and seeded RDKit ETKDG conformers."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ...errors import DataError

#: Elements the shipped list (and GFN2-xTB labelling here) is restricted to.
ALLOWED_ELEMENTS = frozenset({"H", "C", "N", "O", "F", "S", "Cl"})


@dataclass(frozen=True)
class Molecule:
    """One entry of a SMILES file: ``smiles`` and its ``name`` (the ``mol_id`` of every structure)."""

    smiles: str
    name: str


def default_smiles_path() -> Path:
    """Path of the shipped ``molecules.smi`` (package data)."""
    return Path(str(resources.files("symscale.data") / "resources" / "molecules.smi"))


def load_smiles(path: str | Path | None = None) -> list[Molecule]:
    """Read a ``SMILES<TAB>name`` file (``#`` comments and blank lines skipped; whitespace also separates).

    Every SMILES is parsed with RDKit; names must be unique.

    Raises:
        DataError: naming the file and line of a malformed row, an unparsable or charged / open-shell
            SMILES, or a duplicate name.
    """
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    path = Path(path) if path is not None else default_smiles_path()
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DataError(f"{path}: cannot read SMILES file ({exc.strerror or exc})") from None
    molecules: list[Molecule] = []
    seen: set[str] = set()
    for lineno, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.split("\t") if "\t" in text else text.split()
        if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
            raise DataError(f"{path}:{lineno}: expected 'SMILES<TAB>name', got {text!r}")
        smiles, name = fields[0].strip(), fields[1].strip()
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            raise DataError(f"{path}:{lineno}: RDKit cannot parse SMILES {smiles!r}")
        if Chem.GetFormalCharge(mol) != 0 or any(a.GetNumRadicalElectrons() for a in mol.GetAtoms()):
            raise DataError(f"{path}:{lineno}: {smiles!r} is not a neutral closed-shell molecule")
        if name in seen:
            raise DataError(f"{path}:{lineno}: duplicate molecule name {name!r}")
        seen.add(name)
        molecules.append(Molecule(smiles, name))
    if not molecules:
        raise DataError(f"{path}: no molecules found")
    return molecules


def molecule_seed(seed: int, name: str) -> np.random.SeedSequence:
    """The random stream of one molecule: depends only on the run seed and the molecule name.

    This is what makes the output independent of the worker count and of the order tasks finish in.
    """
    return np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode("utf-8"))])


def embed_conformers(smiles: str, n_conformers: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """``n_conformers`` ETKDG (v3) conformers of ``smiles`` with explicit hydrogens.

    Args:
        smiles: the molecule.
        n_conformers: conformers wanted (RDKit may return fewer for rigid molecules; they are then reused
            cyclically by the caller).
        seed: RDKit ``randomSeed`` (0 <= seed < 2**31).

    Returns:
        ``(numbers, [positions (n, 3) in Å, ...])``.

    Raises:
        DataError: when RDKit cannot embed the molecule.
    """
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    params.numThreads = 1
    params.pruneRmsThresh = -1.0
    conf_ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=int(n_conformers), params=params))
    if not conf_ids:
        params.useRandomCoords = True
        conf_ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=int(n_conformers), params=params))
    if not conf_ids:
        raise DataError(f"SMILES {smiles!r}: RDKit ETKDG could not embed a conformer")
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    return numbers, [np.asarray(mol.GetConformer(i).GetPositions(), dtype=np.float64) for i in conf_ids]

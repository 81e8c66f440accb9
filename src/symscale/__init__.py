"""symscale: a scaling-law laboratory for neural force fields.

Sub-packages:

- :mod:`symscale.data` -- readers, the prepared on-disk format, neighbour lists, batches and token streaming;
- :mod:`symscale.models` -- the symmetry staircase (``mpnn``, ``gemnet``, ``egnn``, ``esen``);
- :mod:`symscale.train` -- token-counted single-epoch training runs with measured compute;
- :mod:`symscale.laws` -- compute frontiers, L(N, D) fits, allocation and reports.

Units everywhere: energies in eV, forces in eV/Å, lengths in Å.
"""

__version__ = "0.1.0"

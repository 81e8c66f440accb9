"""The symmetry staircase: ``mpnn`` (unconstrained), ``gemnet`` (invariant, body order 4),
``egnn`` (E(3)-equivariant, l=1) and ``esen`` (SO(2) convolutions, l<=4), each with one width knob."""

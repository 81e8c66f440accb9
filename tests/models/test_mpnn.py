"""The unconstrained MPNN through the shared suite (its rotation error must be clearly non-zero)."""

from suite import ModelSuite


class TestMPNN(ModelSuite):
    name = "mpnn"
    options = {"num_layers": 2}
    equivariant = False

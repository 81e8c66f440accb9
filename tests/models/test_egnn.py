"""MC-EGNN through the shared suite (E(3)-equivariant: rotations and reflections), plus its channels."""

from suite import ModelSuite, ethanol

from symscale.models import build
from symscale.models.egnn import default_vector_channels


class TestEGNN(ModelSuite):
    name = "egnn"
    options = {"num_layers": 2}
    equivariant = True
    reflection = True
    # V = 0 before the first layer, so its vector invariants (and their map) are zero; the map is kept so that
    # every layer has the same parameters (and checkpoints the same layout)
    unused_parameters = ("layers.0.inv.",)


def test_vector_channels_follow_width():
    assert [default_vector_channels(w) for w in (4, 16, 64, 896)] == [2, 2, 8, 112]
    assert build("egnn", 64).channels == 8
    assert build("egnn", 64, vector_channels=3).channels == 3


def test_forces_lie_in_span_of_vector_channels():
    """Direct forces are a fixed linear combination of the final vector channels."""
    import torch
    from symscale.data import Batch

    torch.manual_seed(0)
    model = build("egnn", 16, num_layers=2).double()
    b = Batch.from_atoms([ethanol()], cutoff=5.0, dtype=torch.float64)
    out = model(b)
    assert out["forces"].abs().max() > 0
    model.force_head.weight.data.zero_()
    assert torch.all(model(b)["forces"] == 0)

"""Checkpoint integrity: flipped weight bytes are refused, resume state is verified, old files warn."""

from __future__ import annotations

import shutil

import pytest
import torch

from symscale.cli import main
from symscale.errors import DataError
from symscale.train import checkpoint as ckpt


def corrupt(src, dst, pick):
    """Copy checkpoint ``src`` to ``dst`` with 4 bytes flipped inside the stored payload of the tensor
    ``pick(data)`` (found by its raw bytes in the torch zip file, where tensors are stored uncompressed)."""
    data = torch.load(src, weights_only=True)
    tensor = pick(data)
    raw = src.read_bytes()
    payload = tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    assert len(payload) >= 64
    at = raw.find(payload)
    assert at >= 0 and raw.find(payload, at + 1) < 0  # exactly one copy in the file
    flipped = bytearray(raw)
    middle = at + len(payload) // 2
    for k in range(middle, middle + 4):
        flipped[k] ^= 0x5A
    dst.write_bytes(bytes(flipped))
    return tensor


def largest_weight(data):
    name = max(data["model_state"], key=lambda n: data["model_state"][n].numel())
    return data["model_state"][name]


def test_saved_hash_is_that_of_the_weights(tiny_run):
    data = ckpt.load_checkpoint(tiny_run)
    assert data["model_sha256"] == ckpt.state_sha256(data["model_state"])
    assert data["resume_sha256"] == ckpt.state_sha256({k: data[k] for k in ckpt.RESUME_KEYS})
    changed = {k: v.clone() for k, v in data["model_state"].items()}
    w = largest_weight({"model_state": changed})
    w.view(-1)[0] = torch.nextafter(w.view(-1)[0], torch.tensor(float("inf"), dtype=w.dtype))  # one ulp
    assert ckpt.state_sha256(changed) != data["model_sha256"]
    renamed = {("x" + k if k == sorted(changed)[0] else k): v for k, v in data["model_state"].items()}
    assert ckpt.state_sha256(renamed) != data["model_sha256"]


def test_flipped_weight_bytes_are_refused(tiny_run, emt_dataset, tmp_path, capsys):
    bad = tmp_path / "bad" / "checkpoint.pt"
    bad.parent.mkdir()
    original = corrupt(tiny_run / "checkpoint.pt", bad, largest_weight)
    # torch itself loads the corrupted file without complaint, with different weights ...
    loaded = largest_weight(torch.load(bad, weights_only=True))
    assert not torch.equal(loaded, original)
    # ... symscale refuses it, in one line, from the library and from the command line
    with pytest.raises(DataError, match=r"checkpoint weights fail their integrity check \(sha256 mismatch\)"):
        ckpt.load_model(bad.parent)
    assert main(["eval", str(bad.parent), str(emt_dataset), "--max-structures", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"symscale: error: {bad}: checkpoint weights fail their integrity check")
    assert err.count("\n") == 1
    from ase.build import molecule
    from ase.io import write

    write(tmp_path / "h2o.xyz", molecule("H2O"))
    assert main(["md", str(bad), "--structure", str(tmp_path / "h2o.xyz"), "--steps", "2"]) == 2
    assert "integrity check" in capsys.readouterr().err


def test_flipped_optimizer_bytes_block_resume_only(tiny_run, tmp_path):
    bad = tmp_path / "checkpoint.pt"

    def optimizer_tensor(data):
        tensors = [t for s in data["optimizer"]["state"].values() for t in s.values()
                   if isinstance(t, torch.Tensor) and t.numel() >= 64]
        return max(tensors, key=lambda t: t.numel())

    corrupt(tiny_run / "checkpoint.pt", bad, optimizer_tensor)
    ckpt.load_model(bad)  # the weights are intact: evaluation may use them
    with pytest.raises(DataError, match=r"training state .* fails its integrity check"):
        ckpt.load_checkpoint(bad, resume=True)


def test_resume_from_a_verified_checkpoint(tiny_run, tmp_path):
    from symscale.train.run import run

    out = tmp_path / "copy"
    shutil.copytree(tiny_run, out)
    cfg = str(out / "config.yaml")
    before = (out / "metrics.jsonl").read_text()
    run(cfg, out=out, resume=True)  # a finished run resumes as a no-op after verifying both hashes
    assert (out / "metrics.jsonl").read_text() == before


def test_checkpoint_without_hash_loads_with_a_warning(tiny_run, tmp_path):
    data = torch.load(tiny_run / "checkpoint.pt", weights_only=True)
    legacy = {k: v for k, v in data.items() if not k.endswith("_sha256")}
    torch.save(legacy, tmp_path / "old.pt")
    with pytest.warns(UserWarning, match="no weight hash"):
        model = ckpt.load_model(tmp_path / "old.pt")
    reference = ckpt.load_model(tiny_run)
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name

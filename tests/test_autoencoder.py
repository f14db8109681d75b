"""The two-task auto-encoder: shapes, gradients everywhere, only the requested heads."""

from __future__ import annotations

import pytest
import torch

from uncertainty_mtl.models import ConvAutoencoderClassifier


@pytest.mark.parametrize("size", [8, 28])
def test_outputs_shapes_and_every_parameter_gets_a_gradient(size):
    torch.manual_seed(0)
    model = ConvAutoencoderClassifier(size, mean=0.3, std=0.4)
    images = torch.rand(4, 1, size, size)
    out = model(images)
    assert out["classification"].shape == (4, 10)
    assert out["reconstruction"].shape == (4, 1, size, size)
    recon = out["reconstruction"].detach()
    assert float(recon.min()) >= 0 and float(recon.max()) <= 1
    (out["classification"].logsumexp(1).mean() + out["reconstruction"].mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("size", [8, 28])
def test_code_is_sixteen_by_two_by_two(size):
    assert ConvAutoencoderClassifier(size).encoder(torch.zeros(1, 1, size, size)).shape == (
        1,
        16,
        2,
        2,
    )


def test_only_requested_heads_are_built():
    model = ConvAutoencoderClassifier(8, tasks=["reconstruction"])
    assert list(model.heads) == ["reconstruction"]
    assert set(model(torch.rand(2, 1, 8, 8))) == {"reconstruction"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 16}, "image_size must be 28"),
        ({"image_size": 8, "tasks": ["depth"]}, "non-empty subset"),
        ({"image_size": 8, "tasks": []}, "non-empty subset"),
        ({"image_size": 8, "std": 0.0}, "std must be > 0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConvAutoencoderClassifier(**kwargs)


@pytest.mark.parametrize("size", [8, 28])
def test_shared_trunk_is_the_encoder_and_its_last_layer_makes_the_code(size):
    torch.manual_seed(0)
    model = ConvAutoencoderClassifier(size)
    images = torch.rand(3, 1, size, size)
    code = model.features(images)
    assert code.shape == (3, 16, 2, 2)
    out, by_parts = model(images), model.outputs(code)
    assert all(torch.equal(out[t], by_parts[t]) for t in out)
    shared = {id(p) for p in model.shared_parameters()}
    assert shared == {id(p) for p in model.encoder.parameters()}
    last = model.last_shared_layer()
    assert isinstance(last, torch.nn.Conv2d) and last.out_channels == 16
    # every head's gradient reaches the last shared layer; no head's parameter is "shared"
    for task in out:
        model.zero_grad()
        out = model(images)
        out[task].sum().backward()
        assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0, task
    assert not shared & {id(p) for p in model.heads.parameters()}

"""MultiTaskNet: shapes, every parameter learns, no NaN, one decoder per trained task."""

from __future__ import annotations

import pytest
import torch

from uncertainty_mtl.models import BACKBONES, MultiTaskNet


@pytest.mark.parametrize("backbone", BACKBONES)
def test_outputs_and_gradients_for_every_backbone(backbone):
    torch.manual_seed(0)
    net = MultiTaskNet(
        ["semantic", "instance", "depth"],
        backbone=backbone,
        aspp_channels=32,
        decoder_channels=16,
        small_width=8,
    )
    images = torch.randn(2, 3, 40, 72)
    out = net(images)
    assert out["semantic"].shape == (2, 19, 40, 72)
    assert out["instance"].shape == (2, 2, 40, 72)
    assert out["depth"].shape == (2, 1, 40, 72)
    assert net.aspp.convs[0][0].in_channels == net.encoder(images).shape[1]
    assert net.encoder(images).shape[-2:] == (5, 9)  # output stride 8
    total = sum(v.float().pow(2).mean() for v in out.values())
    total.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert all(torch.isfinite(v).all() for v in out.values())


def test_only_the_trained_tasks_get_a_decoder():
    net = MultiTaskNet(["depth", "semantic"], backbone="small", small_width=8)
    assert list(net.decoders) == ["semantic", "depth"]
    assert set(net(torch.randn(2, 3, 32, 32))) == {"semantic", "depth"}


def test_aspp_has_the_papers_layout_and_no_dropout_by_default():
    net = MultiTaskNet(["semantic"], backbone="resnet18")
    rates = [branch[0].dilation[0] for branch in net.aspp.convs[1:4]]
    assert rates == [12, 24, 36]
    assert all(branch[0].out_channels == 256 for branch in net.aspp.convs[:4])
    assert isinstance(net.aspp.project[3], torch.nn.Identity)
    dropout = MultiTaskNet(["semantic"], backbone="small", aspp_dropout=0.5).aspp.project[3]
    assert isinstance(dropout, torch.nn.Dropout)


def test_resnet18_is_dilated_like_torchvisions_bottleneck_resnets():
    net = MultiTaskNet(["depth"], backbone="resnet18")
    layer4 = net.encoder.layer4
    assert layer4[0].conv1.dilation == (2, 2) and layer4[0].conv1.stride == (1, 1)
    assert layer4[0].conv2.dilation == (4, 4) and layer4[1].conv1.dilation == (4, 4)
    assert net.encoder.layer3[0].conv1.dilation == (1, 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tasks": ["normals"]}, "non-empty subset"),
        ({"tasks": ["depth"], "backbone": "vgg16"}, "unknown backbone"),
        ({"tasks": ["depth"], "backbone": "small", "pretrained": True}, "no pretrained weights"),
        ({"tasks": ["depth"], "backbone": "resnet152"}, "ResNet depth must be one of"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiTaskNet(**kwargs)

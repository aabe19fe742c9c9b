"""ResNet: torchvision's exact state_dict names, order and shapes; parameter counts; stage strides."""

from __future__ import annotations

import pytest
import torch

from annofree.models.resnet import load_torchvision_state_dict, resnet18, resnet50

# torchvision.models.resnet18().state_dict(): every key, in order, with its shape (122 entries).
TORCHVISION_RESNET18 = [
    ("conv1.weight", (64, 3, 7, 7)),
    ("bn1.weight", (64,)),
    ("bn1.bias", (64,)),
    ("bn1.running_mean", (64,)),
    ("bn1.running_var", (64,)),
    ("bn1.num_batches_tracked", ()),
    ("layer1.0.conv1.weight", (64, 64, 3, 3)),
    ("layer1.0.bn1.weight", (64,)),
    ("layer1.0.bn1.bias", (64,)),
    ("layer1.0.bn1.running_mean", (64,)),
    ("layer1.0.bn1.running_var", (64,)),
    ("layer1.0.bn1.num_batches_tracked", ()),
    ("layer1.0.conv2.weight", (64, 64, 3, 3)),
    ("layer1.0.bn2.weight", (64,)),
    ("layer1.0.bn2.bias", (64,)),
    ("layer1.0.bn2.running_mean", (64,)),
    ("layer1.0.bn2.running_var", (64,)),
    ("layer1.0.bn2.num_batches_tracked", ()),
    ("layer1.1.conv1.weight", (64, 64, 3, 3)),
    ("layer1.1.bn1.weight", (64,)),
    ("layer1.1.bn1.bias", (64,)),
    ("layer1.1.bn1.running_mean", (64,)),
    ("layer1.1.bn1.running_var", (64,)),
    ("layer1.1.bn1.num_batches_tracked", ()),
    ("layer1.1.conv2.weight", (64, 64, 3, 3)),
    ("layer1.1.bn2.weight", (64,)),
    ("layer1.1.bn2.bias", (64,)),
    ("layer1.1.bn2.running_mean", (64,)),
    ("layer1.1.bn2.running_var", (64,)),
    ("layer1.1.bn2.num_batches_tracked", ()),
    ("layer2.0.conv1.weight", (128, 64, 3, 3)),
    ("layer2.0.bn1.weight", (128,)),
    ("layer2.0.bn1.bias", (128,)),
    ("layer2.0.bn1.running_mean", (128,)),
    ("layer2.0.bn1.running_var", (128,)),
    ("layer2.0.bn1.num_batches_tracked", ()),
    ("layer2.0.conv2.weight", (128, 128, 3, 3)),
    ("layer2.0.bn2.weight", (128,)),
    ("layer2.0.bn2.bias", (128,)),
    ("layer2.0.bn2.running_mean", (128,)),
    ("layer2.0.bn2.running_var", (128,)),
    ("layer2.0.bn2.num_batches_tracked", ()),
    ("layer2.0.downsample.0.weight", (128, 64, 1, 1)),
    ("layer2.0.downsample.1.weight", (128,)),
    ("layer2.0.downsample.1.bias", (128,)),
    ("layer2.0.downsample.1.running_mean", (128,)),
    ("layer2.0.downsample.1.running_var", (128,)),
    ("layer2.0.downsample.1.num_batches_tracked", ()),
    ("layer2.1.conv1.weight", (128, 128, 3, 3)),
    ("layer2.1.bn1.weight", (128,)),
    ("layer2.1.bn1.bias", (128,)),
    ("layer2.1.bn1.running_mean", (128,)),
    ("layer2.1.bn1.running_var", (128,)),
    ("layer2.1.bn1.num_batches_tracked", ()),
    ("layer2.1.conv2.weight", (128, 128, 3, 3)),
    ("layer2.1.bn2.weight", (128,)),
    ("layer2.1.bn2.bias", (128,)),
    ("layer2.1.bn2.running_mean", (128,)),
    ("layer2.1.bn2.running_var", (128,)),
    ("layer2.1.bn2.num_batches_tracked", ()),
    ("layer3.0.conv1.weight", (256, 128, 3, 3)),
    ("layer3.0.bn1.weight", (256,)),
    ("layer3.0.bn1.bias", (256,)),
    ("layer3.0.bn1.running_mean", (256,)),
    ("layer3.0.bn1.running_var", (256,)),
    ("layer3.0.bn1.num_batches_tracked", ()),
    ("layer3.0.conv2.weight", (256, 256, 3, 3)),
    ("layer3.0.bn2.weight", (256,)),
    ("layer3.0.bn2.bias", (256,)),
    ("layer3.0.bn2.running_mean", (256,)),
    ("layer3.0.bn2.running_var", (256,)),
    ("layer3.0.bn2.num_batches_tracked", ()),
    ("layer3.0.downsample.0.weight", (256, 128, 1, 1)),
    ("layer3.0.downsample.1.weight", (256,)),
    ("layer3.0.downsample.1.bias", (256,)),
    ("layer3.0.downsample.1.running_mean", (256,)),
    ("layer3.0.downsample.1.running_var", (256,)),
    ("layer3.0.downsample.1.num_batches_tracked", ()),
    ("layer3.1.conv1.weight", (256, 256, 3, 3)),
    ("layer3.1.bn1.weight", (256,)),
    ("layer3.1.bn1.bias", (256,)),
    ("layer3.1.bn1.running_mean", (256,)),
    ("layer3.1.bn1.running_var", (256,)),
    ("layer3.1.bn1.num_batches_tracked", ()),
    ("layer3.1.conv2.weight", (256, 256, 3, 3)),
    ("layer3.1.bn2.weight", (256,)),
    ("layer3.1.bn2.bias", (256,)),
    ("layer3.1.bn2.running_mean", (256,)),
    ("layer3.1.bn2.running_var", (256,)),
    ("layer3.1.bn2.num_batches_tracked", ()),
    ("layer4.0.conv1.weight", (512, 256, 3, 3)),
    ("layer4.0.bn1.weight", (512,)),
    ("layer4.0.bn1.bias", (512,)),
    ("layer4.0.bn1.running_mean", (512,)),
    ("layer4.0.bn1.running_var", (512,)),
    ("layer4.0.bn1.num_batches_tracked", ()),
    ("layer4.0.conv2.weight", (512, 512, 3, 3)),
    ("layer4.0.bn2.weight", (512,)),
    ("layer4.0.bn2.bias", (512,)),
    ("layer4.0.bn2.running_mean", (512,)),
    ("layer4.0.bn2.running_var", (512,)),
    ("layer4.0.bn2.num_batches_tracked", ()),
    ("layer4.0.downsample.0.weight", (512, 256, 1, 1)),
    ("layer4.0.downsample.1.weight", (512,)),
    ("layer4.0.downsample.1.bias", (512,)),
    ("layer4.0.downsample.1.running_mean", (512,)),
    ("layer4.0.downsample.1.running_var", (512,)),
    ("layer4.0.downsample.1.num_batches_tracked", ()),
    ("layer4.1.conv1.weight", (512, 512, 3, 3)),
    ("layer4.1.bn1.weight", (512,)),
    ("layer4.1.bn1.bias", (512,)),
    ("layer4.1.bn1.running_mean", (512,)),
    ("layer4.1.bn1.running_var", (512,)),
    ("layer4.1.bn1.num_batches_tracked", ()),
    ("layer4.1.conv2.weight", (512, 512, 3, 3)),
    ("layer4.1.bn2.weight", (512,)),
    ("layer4.1.bn2.bias", (512,)),
    ("layer4.1.bn2.running_mean", (512,)),
    ("layer4.1.bn2.running_var", (512,)),
    ("layer4.1.bn2.num_batches_tracked", ()),
    ("fc.weight", (1000, 512)),
    ("fc.bias", (1000,)),
]


def test_resnet18_state_dict_matches_torchvision() -> None:
    assert len(TORCHVISION_RESNET18) == 122
    state = resnet18(num_classes=1000).state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == TORCHVISION_RESNET18


def test_trunk_has_no_fc_and_loads_a_torchvision_checkpoint() -> None:
    trunk = resnet18()
    expected = [(k, s) for k, s in TORCHVISION_RESNET18 if not k.startswith("fc.")]
    assert [(k, tuple(v.shape)) for k, v in trunk.state_dict().items()] == expected
    checkpoint = {k: torch.full(s, 0.5) for k, s in TORCHVISION_RESNET18}
    load_torchvision_state_dict(trunk, checkpoint)
    assert torch.all(trunk.layer4[1].bn2.running_var == 0.5)
    with pytest.raises(RuntimeError):
        load_torchvision_state_dict(trunk, {k: v for k, v in checkpoint.items() if k != "conv1.weight"})


@pytest.mark.parametrize(
    ("factory", "with_fc", "without_fc"), [(resnet18, 11_689_512, 11_176_512), (resnet50, 25_557_032, 23_508_032)]
)
def test_parameter_counts(factory, with_fc: int, without_fc: int) -> None:
    assert sum(p.numel() for p in factory(num_classes=1000).parameters()) == with_fc
    assert sum(p.numel() for p in factory().parameters()) == without_fc


def test_resnet50_names_follow_torchvision_bottleneck() -> None:
    shapes = {k: tuple(v.shape) for k, v in resnet50().state_dict().items()}
    assert len(shapes) == 320 - 2  # torchvision resnet50 has 320 entries with fc
    assert shapes["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)  # layer1 widens 64 -> 256
    assert shapes["layer2.0.conv2.weight"] == (128, 128, 3, 3)  # v1.5: the stride sits on the 3x3
    assert shapes["layer4.2.bn3.running_mean"] == (2048,)
    assert "layer1.1.downsample.0.weight" not in shapes


@pytest.mark.parametrize("factory", [resnet18, resnet50])
def test_forward_features_strides_and_channels(factory) -> None:
    torch.manual_seed(0)
    net = factory().eval()
    feats = net.forward_features(torch.randn(2, 3, 64, 64))
    assert list(feats) == ["res2", "res3", "res4", "res5"]
    for name, x in feats.items():
        assert x.shape == (2, net.channels[name], 64 // net.strides[name], 64 // net.strides[name])
    assert net.num_features == net.channels["res5"] == 512 * type(net.layer4[0]).expansion
    assert net(torch.randn(2, 3, 64, 64)).shape == (2, net.num_features)


def test_zero_init_residual_makes_blocks_identities() -> None:
    plain, zeroed = resnet18(), resnet18(zero_init_residual=True)
    assert torch.all(zeroed.layer3[1].bn2.weight == 0) and torch.all(plain.layer3[1].bn2.weight == 1)
    assert torch.all(zeroed.layer3[1].bn1.weight == 1)
    block = zeroed.layer1[1].eval()
    x = torch.rand(1, 64, 8, 8)  # non-negative, as after a ReLU: relu(0 + x) == x
    assert torch.equal(block(x), x)
    assert torch.all(resnet50(zero_init_residual=True).layer2[0].bn3.weight == 0)


def test_fc_logits() -> None:
    net = resnet18(num_classes=10).eval()
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)

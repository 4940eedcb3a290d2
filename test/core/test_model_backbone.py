"""ResNet backbone: torchvision parameter names and shapes, strict weight loading, output strides."""
from __future__ import annotations

import pytest
import torch

from simdistill_ros.core.model.backbone import ResNet, load_torchvision_weights

# torchvision.models.resnet: (block, blocks per stage); Bottleneck expansion 4 with the stride on conv2.
TORCHVISION_LAYERS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3))}


def torchvision_resnet_shapes(depth: int) -> dict[str, tuple[int, ...]]:
    """Reference state-dict keys and shapes of torchvision's resnet{depth}, written out from its layer
    specification (conv1/bn1, layer{1-4}.{i}.conv{1,2[,3]}/bn{...}, downsample.0/1 on the first block of a
    stage when the stride or width changes, fc)."""
    kind, layers = TORCHVISION_LAYERS[depth]
    expansion = 1 if kind == "basic" else 4
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(name: str, c: int) -> None:
        for p in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{p}"] = (c,)
        shapes[f"{name}.num_batches_tracked"] = ()

    shapes["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
        stride = 1 if stage == 0 else 2
        for i in range(blocks):
            p = f"layer{stage + 1}.{i}"
            if kind == "basic":
                shapes[f"{p}.conv1.weight"] = (planes, inplanes, 3, 3)
                bn(f"{p}.bn1", planes)
                shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{p}.bn2", planes)
            else:
                shapes[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
                bn(f"{p}.bn1", planes)
                shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{p}.bn2", planes)
                shapes[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
                bn(f"{p}.bn3", planes * 4)
            if i == 0 and (stride != 1 or inplanes != planes * expansion):
                shapes[f"{p}.downsample.0.weight"] = (planes * expansion, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    shapes["fc.weight"] = (1000, 512 * expansion)
    shapes["fc.bias"] = (1000,)
    return shapes


def _random_state_dict(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {k: (torch.randint(0, 100, (), generator=g) if k.endswith("num_batches_tracked")
                else torch.rand(s, generator=g) + 0.1) for k, s in shapes.items()}


# Published facts about torchvision: state-dict entries and parameter counts (with the 1000-class fc).
KNOWN = {18: (122, 11_689_512), 50: (320, 25_557_032)}


@pytest.mark.parametrize("depth", [18, 50])
def test_reference_matches_known_torchvision_facts(depth: int) -> None:
    shapes = torchvision_resnet_shapes(depth)
    n_entries, n_params = KNOWN[depth]
    assert len(shapes) == n_entries
    numel = sum(torch.Size(s).numel() for k, s in shapes.items()
                if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert numel == n_params


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_names_and_shapes_match_torchvision(depth: int) -> None:
    ref = {k: s for k, s in torchvision_resnet_shapes(depth).items() if not k.startswith("fc.")}
    ours = {k: tuple(v.shape) for k, v in ResNet(depth).state_dict().items()}
    assert ours == ref


@pytest.mark.parametrize("depth", [18, 50])
def test_load_torchvision_state_dict_strict(depth: int) -> None:
    sd = _random_state_dict(torchvision_resnet_shapes(depth))
    model = ResNet(depth)
    load_torchvision_weights(model, sd)
    loaded = model.state_dict()
    for k, v in loaded.items():
        assert torch.equal(v, sd[k]), k
    # checkpoints from before BatchNorm tracked num_batches_tracked load as well
    old = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    load_torchvision_weights(ResNet(depth), old)


def test_load_reports_missing_unexpected_and_mismatched() -> None:
    sd = _random_state_dict(torchvision_resnet_shapes(18))
    del sd["layer1.0.conv1.weight"]
    sd["layer9.weight"] = torch.zeros(1)
    sd["bn1.weight"] = torch.zeros(3)
    with pytest.raises(ValueError) as err:
        load_torchvision_weights(ResNet(18), sd)
    msg = str(err.value)
    assert "missing keys (1): layer1.0.conv1.weight" in msg
    assert "unexpected keys (1): layer9.weight" in msg
    assert "bn1.weight: checkpoint (3,) vs model (64,)" in msg
    with pytest.raises(ValueError, match="shape mismatches"):
        load_torchvision_weights(ResNet(18), _random_state_dict(torchvision_resnet_shapes(50)))


@pytest.mark.parametrize("depth,channels", [(18, (128, 256, 512)), (50, (512, 1024, 2048))])
def test_outputs_are_c3_c4_c5(depth: int, channels: tuple[int, int, int]) -> None:
    model = ResNet(depth).eval()
    assert model.out_channels == channels
    with torch.no_grad():
        c3, c4, c5 = model(torch.randn(1, 3, 64, 96))
    assert c3.shape == (1, channels[0], 8, 12)
    assert c4.shape == (1, channels[1], 4, 6)
    assert c5.shape == (1, channels[2], 2, 3)
    with pytest.raises(ValueError, match="depth"):
        ResNet(101)


def test_narrow_width_scales_every_stage() -> None:
    """A width-16 ResNet-18 has a quarter of the standard channels everywhere (the reference shapes,
    every output channel divided by 4) and C3/C4/C5 with 32/64/128 channels."""
    ref = {k: s for k, s in torchvision_resnet_shapes(18).items() if not k.startswith("fc.")}
    quarter = {k: tuple(d // 4 if i < 2 and not (k == "conv1.weight" and i == 1) else d for i, d in enumerate(s))
               for k, s in ref.items()}
    model = ResNet(18, width=16).eval()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == quarter
    assert model.out_channels == (32, 64, 128)
    with torch.no_grad():
        c3, c4, c5 = model(torch.randn(2, 3, 64, 96))
    assert (c3.shape, c4.shape, c5.shape) == ((2, 32, 8, 12), (2, 64, 4, 6), (2, 128, 2, 3))
    with pytest.raises(ValueError, match=r"width 16"):
        load_torchvision_weights(model, _random_state_dict(torchvision_resnet_shapes(18)))


def test_default_width_is_the_standard_resnet() -> None:
    torch.manual_seed(0)
    a = ResNet(18).state_dict()
    torch.manual_seed(0)
    b = ResNet(18, width=64).state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)

"""UNet: output shapes, the size and argument errors, channels_last, gradients, a state_dict
round trip, and that it can overfit one image."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medgan_fast.models.unet import UNet


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("num_classes", [1, 3])
def test_shapes(depth: int, in_channels: int, num_classes: int) -> None:
    model = UNet(in_channels, num_classes, depth=depth, width=4).eval()
    assert model.multiple == 2**depth
    assert (model.in_channels, model.num_classes, model.depth, model.width) == (in_channels, num_classes, depth, 4)
    x = torch.randn(2, in_channels, 2 * model.multiple, 3 * model.multiple)
    assert model(x).shape == (2, num_classes, 2 * model.multiple, 3 * model.multiple)


def test_size_not_a_multiple() -> None:
    model = UNet(depth=4, width=4)
    with pytest.raises(ValueError, match=r"multiples of 16 \(depth 4\), got 100x128"):
        model(torch.randn(1, 1, 100, 128))
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        model(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("name, value", [("in_channels", 0), ("num_classes", 0), ("depth", 0), ("width", 0),
                                         ("depth", 2.0), ("width", True)])
def test_bad_arguments(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        UNet(**{name: value})


def test_channels_last() -> None:
    model = UNet(3, 2, depth=3, width=8).eval()
    x = torch.randn(2, 3, 32, 48)
    expected = model(x)
    got = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_autocast() -> None:
    model = UNet(depth=2, width=4).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(torch.randn(1, 1, 16, 16)).shape == (1, 1, 16, 16)


def test_gradient_reaches_first_conv() -> None:
    model = UNet(depth=2, width=4)
    model(torch.randn(2, 1, 16, 16)).sum().backward()
    first = model.encoder[0][0].weight.grad
    assert first is not None and first.abs().sum() > 0


def test_state_dict_round_trip() -> None:
    model = UNet(3, 2, depth=2, width=8)
    model(torch.randn(4, 3, 16, 16))  # moves the batch-norm running statistics off their defaults
    model.eval()
    copy = UNet(model.in_channels, model.num_classes, model.depth, model.width)
    copy.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(copy.eval()(x), model(x), rtol=0, atol=0)


def test_overfits_one_disk() -> None:
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    mask = (((yy - 15.5) ** 2 + (xx - 15.5) ** 2) < 10.0**2).float()[None, None]
    image = mask + 0.3 * torch.randn_like(mask)
    model = UNet(depth=2, width=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = F.binary_cross_entropy_with_logits(model(image), mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2

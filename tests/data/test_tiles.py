"""tile_origins and predict_tiled: coverage, exact reconstruction with a per-pixel and a 3x3
predictor, rounding of the tile side, batching, and the argument errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medgan_fast.data.tiles import predict_tiled, tile_origins

CASES = [(1, 4, 0), (3, 4, 1), (4, 4, 2), (5, 4, 0), (10, 4, 1), (10, 4, 3), (11, 4, 2), (100, 32, 8), (97, 32, 31)]


@pytest.mark.parametrize("length, tile, overlap", CASES)
def test_tile_origins_cover(length: int, tile: int, overlap: int) -> None:
    origins = tile_origins(length, tile, overlap)
    assert origins[0] == 0 and origins == sorted(set(origins))
    if length <= tile:
        assert origins == [0]
        return
    assert origins[-1] + tile == length
    for a, b in zip(origins, origins[1:]):
        assert b - a <= tile - overlap  # no gap, and at least `overlap` shared pixels


def test_tile_origins_values() -> None:
    assert tile_origins(10, 4, 1) == [0, 3, 6]
    assert tile_origins(11, 4, 1) == [0, 3, 6, 7]
    assert tile_origins(4, 4, 0) == [0]


def double_first_channel(x: torch.Tensor) -> torch.Tensor:
    return x[:, :1] * 2


SIZES = [(5, 7), (16, 16), (16, 40), (37, 23), (1, 50), (64, 33)]


@pytest.mark.parametrize("height, width", SIZES)
@pytest.mark.parametrize("overlap", [0, 1, 4])
def test_per_pixel_predict_is_exact(height: int, width: int, overlap: int) -> None:
    image = torch.randn(3, height, width)
    out = predict_tiled(double_first_channel, image, tile=16, overlap=overlap)
    assert out.shape == (1, height, width) and out.dtype == torch.float32
    torch.testing.assert_close(out, image[:1] * 2, rtol=0, atol=1e-6)


@pytest.mark.parametrize("height, width", [(16, 16), (40, 29), (53, 64)])
@pytest.mark.parametrize("overlap", [2, 3, 6])
def test_3x3_conv_is_exact(height: int, width: int, overlap: int) -> None:
    # A 3x3 conv is wrong only on a tile's outermost ring, which the window weighs 0 at every
    # interior edge (overlap >= 2); at the image border the tile's zero padding is the image's.
    weight = torch.randn(2, 3, 3, 3)
    conv = lambda x: F.conv2d(x, weight, padding=1)  # noqa: E731
    image = torch.randn(3, height, width)
    out = predict_tiled(conv, image, tile=16, overlap=overlap)
    torch.testing.assert_close(out, conv(image[None])[0], rtol=0, atol=1e-5)


def test_3x3_conv_on_padded_image_interior() -> None:
    # Smaller than a tile: reflect padding differs from zero padding only on the border.
    weight = torch.randn(1, 1, 3, 3)
    conv = lambda x: F.conv2d(x, weight, padding=1)  # noqa: E731
    image = torch.randn(1, 10, 13)
    out = predict_tiled(conv, image, tile=16, overlap=4)
    torch.testing.assert_close(out[:, 1:-1, 1:-1], conv(image[None])[0, :, 1:-1, 1:-1], rtol=0, atol=1e-5)


def test_tile_rounded_up_to_multiple() -> None:
    sides = []

    def predict(x: torch.Tensor) -> torch.Tensor:
        sides.append(x.shape[-2:])
        return x

    image = torch.randn(1, 50, 70)
    out = predict_tiled(predict, image, tile=20, overlap=4, multiple=16)
    assert set(sides) == {(32, 32)}
    torch.testing.assert_close(out, image, rtol=0, atol=1e-6)


def test_batch_size_does_not_change_result() -> None:
    weight = torch.randn(2, 1, 3, 3)
    conv = lambda x: torch.tanh(F.conv2d(x, weight, padding=1))  # noqa: E731
    image = torch.randn(1, 45, 61)
    one = predict_tiled(conv, image, tile=16, overlap=5, batch_size=1)
    eight = predict_tiled(conv, image, tile=16, overlap=5, batch_size=8)
    # Not bit-exact: the CPU convolution's summation order depends on the batch size.
    torch.testing.assert_close(one, eight, rtol=0, atol=1e-6)


def test_no_grad() -> None:
    layer = torch.nn.Conv2d(1, 1, 3, padding=1)
    out = predict_tiled(layer, torch.randn(1, 20, 20), tile=8, overlap=2)
    assert not out.requires_grad


@pytest.mark.parametrize("kwargs, name", [
    ({"tile": 0}, "tile"), ({"tile": 8, "overlap": 8}, "overlap"), ({"overlap": -1}, "overlap"),
    ({"multiple": 0}, "multiple"), ({"batch_size": 0}, "batch_size"), ({"image": torch.randn(8, 8)}, "image"),
])
def test_bad_arguments(kwargs: dict, name: str) -> None:
    arguments = {"predict": double_first_channel, "image": torch.randn(1, 8, 8), "tile": 4, "overlap": 1, **kwargs}
    with pytest.raises(ValueError, match=name):
        predict_tiled(**arguments)


def test_bad_predict_output() -> None:
    with pytest.raises(ValueError, match="predict"):
        predict_tiled(lambda x: x[:, :, :-1], torch.randn(1, 8, 8), tile=4, overlap=1)

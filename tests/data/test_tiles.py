"""tile_origins and predict_tiled: coverage, exact reconstruction with a per-pixel and a 3x3
predictor, rounding of the tile side, batching, and the argument errors; predict_tiled_rows:
the same result as predict_tiled, reading and writing in bands, each row once and in order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medgan_fast.data.tiles import count_tiles, predict_tiled, predict_tiled_rows, tile_origins

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


# ---------------------------------------------------------------------------------------
# predict_tiled_rows


def conv_stack(channels: int = 3, out: int = 2) -> nn.Module:
    # 5x5 receptive field: wider than the 3x3 the ramps hide, so blending differs from a
    # whole-image conv and a mismatch in weights or origins shows.
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, out, 3, padding=1)).eval()


def run_rows(predict, image: torch.Tensor, tile: int, overlap: int, **kwargs) -> tuple[torch.Tensor, list, list]:
    reads: list[tuple[int, int]] = []
    writes: list[np.ndarray] = []

    def read_rows(y0: int, y1: int) -> np.ndarray:
        reads.append((y0, y1))
        return image[:, y0:y1].numpy()

    predict_tiled_rows(predict, read_rows, writes.append, tuple(image.shape), tile, overlap, **kwargs)
    return torch.from_numpy(np.concatenate(writes, axis=1)), reads, writes


ROW_CASES = [(300, 517, 64, 8), (300, 517, 100, 30), (45, 61, 16, 5), (10, 13, 16, 4), (7, 40, 16, 4),
             (100, 9, 16, 2), (16, 100, 16, 3), (64, 64, 16, 0), (33, 70, 16, 1)]


@pytest.mark.parametrize("height, width, tile, overlap", ROW_CASES)
def test_rows_match_predict_tiled(height: int, width: int, tile: int, overlap: int) -> None:
    model = conv_stack()
    image = torch.randn(3, height, width)
    expected = predict_tiled(model, image, tile, overlap, batch_size=3)
    out, reads, writes = run_rows(model, image, tile, overlap, batch_size=3)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert all(w.dtype == np.float32 and w.shape[0] == 2 and w.shape[2] == width for w in writes)
    # Input: adjacent ranges, top to bottom, every row once, never more than a tile at a time.
    assert reads[0][0] == 0 and reads[-1][1] == height
    assert all(a[1] == b[0] for a, b in zip(reads, reads[1:]))
    assert max(y1 - y0 for y0, y1 in reads) <= tile
    if height >= 3 * tile:
        assert len(writes) > 1  # written as it goes, not at the end


def test_rows_hold_bands_not_the_image() -> None:
    # Wide enough that a batch stays in one tile row: rows are read just ahead of the tiles.
    image = torch.randn(1, 400, 200)
    written = 0
    most_ahead = 0

    def read_rows(y0: int, y1: int) -> torch.Tensor:
        nonlocal most_ahead
        most_ahead = max(most_ahead, y1 - written)  # rows read but not yet written
        return image[:, y0:y1]

    def write_rows(rows: np.ndarray) -> None:
        nonlocal written
        written += rows.shape[1]

    predict_tiled_rows(double_first_channel, read_rows, write_rows, (1, 400, 200), tile=32, overlap=8, batch_size=4)
    assert written == 400 and most_ahead <= 2 * 32


def test_rows_multiple_and_batch_size() -> None:
    sides = []

    def predict(x: torch.Tensor) -> torch.Tensor:
        sides.append(tuple(x.shape))
        return x * 3

    image = torch.randn(2, 50, 70)
    out, reads, _ = run_rows(predict, image, tile=20, overlap=4, multiple=16, batch_size=5)
    assert {s[2:] for s in sides} == {(32, 32)} and max(s[0] for s in sides) == 5
    assert max(y1 - y0 for y0, y1 in reads) <= 32
    torch.testing.assert_close(out, image * 3, rtol=0, atol=1e-6)


def test_rows_progress() -> None:
    calls = []
    image = torch.randn(1, 40, 40)
    run_rows(double_first_channel, image, 16, 4, batch_size=2, progress=lambda done, total: calls.append((done, total)))
    total = count_tiles(40, 40, 16, 4)
    assert total == len(tile_origins(40, 16, 4)) ** 2 and count_tiles(5, 7, 16, 4) == 1
    assert calls[-1] == (total, total) and [d for d, _ in calls] == sorted(d for d, _ in calls)

    class Bar:
        n = 0

        def update(self, n: int) -> None:
            self.n += n

    bar = Bar()
    run_rows(double_first_channel, image, 16, 4, batch_size=3, progress=bar)
    assert bar.n == total


def test_rows_bad_read() -> None:
    with pytest.raises(ValueError, match="read_rows"):
        predict_tiled_rows(double_first_channel, lambda y0, y1: torch.zeros(1, y1 - y0, 9), lambda rows: None,
                           (1, 40, 10), tile=8, overlap=2)
    with pytest.raises(ValueError, match="shape"):
        predict_tiled_rows(double_first_channel, lambda y0, y1: None, lambda rows: None, (40, 10), tile=8, overlap=2)
    with pytest.raises(ValueError, match="overlap"):
        predict_tiled_rows(double_first_channel, lambda y0, y1: None, lambda rows: None, (1, 40, 10), 8, 8)

"""SlideReader and SlideWriter: every TIFF layout read by rows exactly as tifffile reads it
whole, only the strips or tiles of a band read, LZW against Pillow's libtiff, PNG; the writer's
round trips, atomic output (nothing left on error or with rows missing), argument errors, and
bounded memory on a 4096 x 4096 image."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, features

from medgan_fast.data.images import read_image
from medgan_fast.data.slides import SlideReader, SlideWriter
from medgan_fast.data.tiles import predict_tiled, predict_tiled_rows
from medgan_fast.errors import DataError, OutputError

HEIGHT, WIDTH = 300, 517
RANGES = [(0, HEIGHT), (0, 1), (5, 77), (31, 33), (64, 128), (100, 290), (HEIGHT - 1, HEIGHT)]


def pixels(rng: np.random.Generator, channels: int, dtype: type, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """(C, H, W) test pixels with smooth parts (so compression does something) and noise."""
    ramp = np.add.outer(np.arange(height), np.arange(width))[None] * np.arange(1, channels + 1)[:, None, None]
    noise = rng.integers(0, 40, (channels, height, width))
    if np.dtype(dtype).kind == "f":
        return (ramp / 7.0 + noise / 3.0).astype(dtype)
    return ((ramp + noise) % np.iinfo(dtype).max).astype(dtype)


def as_chw(array: np.ndarray, planar: bool) -> np.ndarray:
    """tifffile.imread's result, (H, W), (H, W, S) or (S, H, W), as (C, H, W) without alpha."""
    if array.ndim == 2:
        return array[None]
    return (array if planar else array.transpose(2, 0, 1))[:3]


LAYOUTS = [
    # channels, dtype, tile (None: strips), compression, planar
    (1, np.uint8, None, None, False),
    (1, np.uint8, (32, 48), "zlib", False),
    (1, np.uint16, None, "zlib", False),
    (1, np.uint16, (64, 64), None, False),
    (1, np.float32, (16, 32), "zlib", False),
    (3, np.uint8, None, None, False),
    (3, np.uint8, None, "zlib", False),
    (3, np.uint8, (32, 32), "zlib", False),
    (3, np.uint8, (48, 16), None, False),
    (3, np.uint8, None, None, True),
    (3, np.uint8, None, "zlib", True),
    (3, np.uint16, (32, 64), "zlib", True),
    (3, np.uint16, (32, 32), None, True),
    (4, np.uint8, None, "zlib", False),
    (4, np.uint8, (32, 32), "zlib", True),
]


@pytest.mark.parametrize("channels, dtype, tile, compression, planar, rowsperstrip",
                         [(*layout, rows) for layout in LAYOUTS for rows in ([None, 7] if layout[2] is None else [None])])
def test_reader_matches_tifffile(tmp_path: Path, rng: np.random.Generator, channels: int, dtype: type,
                                 tile: tuple[int, int] | None, compression: str | None, planar: bool,
                                 rowsperstrip: int | None) -> None:
    image = pixels(rng, channels, dtype)
    path = tmp_path / "slide.tif"
    options = {"photometric": "rgb", "planarconfig": "separate" if planar else "contig"} if channels > 1 else {}
    if channels == 4:
        options["extrasamples"] = ["unassalpha"]
    data = image[0] if channels == 1 else image if planar else image.transpose(1, 2, 0)
    tifffile.imwrite(path, data, tile=tile, compression=compression, rowsperstrip=rowsperstrip, **options)
    expected = as_chw(tifffile.imread(path), planar)
    with SlideReader(path) as slide:
        assert slide.shape == (min(channels, 3), HEIGHT, WIDTH) and slide.dtype == np.dtype(dtype)
        for y0, y1 in RANGES:
            rows = slide.read_rows(y0, y1)
            assert rows.dtype == np.dtype(dtype) and rows.flags.c_contiguous
            np.testing.assert_array_equal(rows, expected[:, y0:y1])


def test_reader_big_endian_and_float64(tmp_path: Path, rng: np.random.Generator) -> None:
    image = pixels(rng, 1, np.uint16)[0]
    tifffile.imwrite(tmp_path / "be.tif", image, byteorder=">", compression="zlib", predictor=True, rowsperstrip=16)
    tifffile.imwrite(tmp_path / "f64.tif", image.astype(np.float64) / 3, tile=(32, 32))
    with SlideReader(tmp_path / "be.tif") as slide:
        assert slide.dtype == np.uint16
        np.testing.assert_array_equal(slide.read_rows(10, 90)[0], image[10:90])
    with SlideReader(tmp_path / "f64.tif") as slide:
        assert slide.dtype == np.float32
        np.testing.assert_array_equal(slide.read_rows(10, 90)[0], (image[10:90] / 3).astype(np.float32))


def test_reader_sequential_bands(tmp_path: Path, rng: np.random.Generator) -> None:
    # Bands that cut through tiles: each tile decoded once (the cut ones are kept), and the
    # bands put together are the image.
    image = pixels(rng, 3, np.uint8)
    path = tmp_path / "slide.tif"
    tifffile.imwrite(path, image.transpose(1, 2, 0), tile=(64, 64), compression="zlib", photometric="rgb")
    with SlideReader(path) as slide:
        decoded = []
        segment = slide._segment
        slide._segment = lambda index, rows: decoded.append(index) or segment(index, rows)
        bands = [slide.read_rows(y, min(y + 50, HEIGHT)) for y in range(0, HEIGHT, 50)]
    np.testing.assert_array_equal(np.concatenate(bands, axis=1), image)
    assert sorted(decoded) == list(range(5 * 9))


@pytest.mark.parametrize("options", [
    {"rowsperstrip": 16, "compression": "zlib"},
    {"tile": (32, 32), "compression": "zlib"},
    {},  # uncompressed, tifffile's default of one strip: read row by row
])
def test_reader_reads_only_the_band(tmp_path: Path, rng: np.random.Generator, options: dict) -> None:
    image = pixels(rng, 1, np.uint8, 512, 256)[0]
    path = tmp_path / "slide.tif"
    tifffile.imwrite(path, image, **options)
    with SlideReader(path) as slide:
        read = []
        read_bytes = slide._read_bytes
        slide._read_bytes = lambda offset, count: read.append(count) or read_bytes(offset, count)
        np.testing.assert_array_equal(slide.read_rows(100, 120)[0], image[100:120])
        stored = sum(slide._page.databytecounts)
    assert 0 < sum(read) < stored / 8  # 20 rows of 512, in 2 strips or 2 tile rows at most


@pytest.mark.skipif(not features.check("libtiff"), reason="Pillow without libtiff cannot write LZW")
@pytest.mark.parametrize("channels, dtype, predictor", [(3, np.uint8, 1), (3, np.uint8, 2), (1, np.uint16, 1),
                                                        (1, np.uint8, 2)])
def test_reader_lzw(tmp_path: Path, rng: np.random.Generator, channels: int, dtype: type, predictor: int) -> None:
    image = pixels(rng, channels, dtype, 150, 301)
    image[:, 40:60] = rng.integers(0, 255, (channels, 20, 301))  # noise fills the code table: clears
    path = tmp_path / "lzw.tif"
    Image.fromarray(image[0] if channels == 1 else image.transpose(1, 2, 0)).save(
        path, compression="tiff_lzw", tiffinfo={317: predictor})
    with tifffile.TiffFile(path) as tiff:
        assert tiff.pages[0].compression == 5 and tiff.pages[0].predictor == predictor
    with Image.open(path) as pil:
        expected = np.array(pil)
    expected = expected[None] if channels == 1 else expected.transpose(2, 0, 1)
    with SlideReader(path) as slide:
        np.testing.assert_array_equal(slide.read_rows(0, 150), expected)
        np.testing.assert_array_equal(slide.read_rows(33, 101), expected[:, 33:101])


@pytest.mark.parametrize("name, mode, channels", [("grey.png", "L", 1), ("rgba.png", "RGBA", 4), ("rgb.jpg", "RGB", 3)])
def test_reader_pillow(tmp_path: Path, rng: np.random.Generator, name: str, mode: str, channels: int) -> None:
    image = pixels(rng, channels, np.uint8, 40, 50)
    Image.fromarray(image[0] if channels == 1 else image.transpose(1, 2, 0), mode).save(tmp_path / name)
    expected = read_image(tmp_path / name)
    with SlideReader(tmp_path / name) as slide:
        assert slide.shape == expected.shape == (min(channels, 3), 40, 50)
        np.testing.assert_array_equal(slide.read_rows(3, 17), expected[:, 3:17])


def test_reader_errors(tmp_path: Path, rng: np.random.Generator) -> None:
    (tmp_path / "text.tif").write_text("not a TIFF")
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((3, 8, 8), np.uint8), photometric="minisblack")
    tifffile.imwrite(tmp_path / "int16.tif", np.zeros((8, 8), np.int16))
    tifffile.imwrite(tmp_path / "five.tif", np.zeros((8, 8, 5), np.uint8), photometric="minisblack",
                     planarconfig="contig")
    (tmp_path / "image.bmp").write_bytes(b"BM")
    if features.check("libtiff"):  # Pillow writes JPEG-in-TIFF; tifffile decodes it only with imagecodecs
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "jpeg.tif", compression="jpeg")
    for name, match in [("text.tif", "cannot read"), ("stack.tif", "stack"), ("int16.tif", "sample format"),
                        ("five.tif", "5 samples"), ("image.bmp", "unsupported file type"), ("missing.tif", "cannot"),
                        ("jpeg.tif", "imagecodecs")]:
        if name == "jpeg.tif" and not (tmp_path / name).exists():
            continue
        with pytest.raises(DataError, match=name.replace(".", r"\.") + ".*" + match):
            SlideReader(tmp_path / name)
    tifffile.imwrite(tmp_path / "ok.tif", np.zeros((8, 8), np.uint8))
    with SlideReader(tmp_path / "ok.tif") as slide:
        for y0, y1 in [(0, 0), (-1, 3), (4, 9)]:
            with pytest.raises(ValueError, match="read_rows"):
                slide.read_rows(y0, y1)
    with pytest.raises(ValueError, match="closed"):
        slide.read_rows(0, 1)


def test_reader_takes_the_first_series(tmp_path: Path, rng: np.random.Generator) -> None:
    # A slide with a thumbnail after it (as in SVS): the full-resolution image is read.
    image = pixels(rng, 3, np.uint8).transpose(1, 2, 0)
    with tifffile.TiffWriter(tmp_path / "slide.tif") as tiff:
        tiff.write(image, tile=(64, 64), compression="zlib", photometric="rgb")
        tiff.write(image[::8, ::8].copy(), photometric="rgb")
    with SlideReader(tmp_path / "slide.tif") as slide:
        np.testing.assert_array_equal(slide.read_rows(0, HEIGHT), image.transpose(2, 0, 1))


# ---------------------------------------------------------------------------------------
# SlideWriter


def write_in_bands(path: Path, image: np.ndarray, band: int = 37, **kwargs) -> None:
    with SlideWriter(path, image.shape, image.dtype, **kwargs) as out:
        for y in range(0, image.shape[1], band):
            out.write_rows(image[:, y:y + band])


@pytest.mark.parametrize("channels, dtype", [(3, np.uint8), (1, np.uint16), (1, np.float32), (2, np.float32)])
def test_writer_tiff_round_trip(tmp_path: Path, rng: np.random.Generator, channels: int, dtype: type) -> None:
    image = pixels(rng, channels, dtype)
    path = tmp_path / "out.tif"
    write_in_bands(path, image, tile=64)
    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        assert len(tiff.pages) == 1 and page.is_tiled and page.compression == 8  # zlib (Adobe deflate)
    np.testing.assert_array_equal(as_chw(tifffile.imread(path), planar=False), image)
    with SlideReader(path) as slide:
        np.testing.assert_array_equal(slide.read_rows(0, HEIGHT), image[:1] if channels == 2 else image)  # 2: grey, alpha
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]


@pytest.mark.parametrize("name, channels, dtype", [("out.png", 3, np.uint8), ("out.png", 1, np.uint16),
                                                   ("out.jpg", 3, np.uint8)])
def test_writer_pillow_round_trip(tmp_path: Path, rng: np.random.Generator, name: str, channels: int,
                                  dtype: type) -> None:
    image = pixels(rng, channels, dtype, 60, 70)
    write_in_bands(tmp_path / name, image, band=13)
    back = read_image(tmp_path / name)
    assert back.shape == image.shape and back.dtype == image.dtype
    if name.endswith(".png"):
        np.testing.assert_array_equal(back, image)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize("name", ["out.tif", "out.png"])
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_writer_is_atomic(tmp_path: Path, rng: np.random.Generator, name: str, error: type) -> None:
    image = pixels(rng, 1, np.uint8)
    with pytest.raises(error, match="midway"):
        with SlideWriter(tmp_path / name, image.shape, np.uint8, tile=32) as out:
            out.write_rows(image[:, :100])
            raise error("midway")
    assert list(tmp_path.iterdir()) == []
    # Too few rows: refused at close, and an existing file is left as it was.
    (tmp_path / name).write_bytes(b"old")
    out = SlideWriter(tmp_path / name, image.shape, np.uint8, tile=32)
    out.write_rows(image[:, :299])
    with pytest.raises(ValueError, match="299 of 300 rows"):
        out.close()
    assert [p.name for p in tmp_path.iterdir()] == [name] and (tmp_path / name).read_bytes() == b"old"


def test_writer_errors(tmp_path: Path) -> None:
    for name, shape, dtype, match in [("a.bmp", (1, 4, 4), np.uint8, "ending in"),
                                      ("a.png", (1, 4, 4), np.float32, "PNG output"),
                                      ("a.png", (3, 4, 4), np.uint16, "PNG output"),
                                      ("a.jpg", (2, 4, 4), np.uint8, "JPEG output"),
                                      ("a.tif", (1, 4, 4), np.int16, "TIFF output")]:
        with pytest.raises(OutputError, match=match):
            SlideWriter(tmp_path / name, shape, dtype)
    with pytest.raises(ValueError, match="shape"):
        SlideWriter(tmp_path / "a.tif", (4, 4), np.uint8)
    with SlideWriter(tmp_path / "a.tif", (1, 20, 30), np.uint8, tile=16) as out:
        for rows, match in [(np.zeros((1, 5, 30), np.uint16), "uint8"), (np.zeros((1, 5, 31), np.uint8), "30"),
                            (np.zeros((1, 21, 30), np.uint8), "21 rows of 20")]:
            with pytest.raises(ValueError, match=match):
                out.write_rows(rows)
        out.write_rows(np.zeros((1, 20, 30), np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["a.tif"]


def test_memory_is_a_band(tmp_path: Path, rng: np.random.Generator) -> None:
    # 4096 x 4096 grey uint8 = 16 MiB; read and written in 128-row bands (512 KiB) it must
    # hold a few bands (the writer three, the reader one and a strip), not the image.
    size, band = 4096, 128
    image = (np.add.outer(np.arange(size) // 3, np.arange(size) // 5) % 251).astype(np.uint8)
    image[::97] = rng.integers(0, 255, (len(image[::97]), size))  # smooth (fast to compress), some noise
    tifffile.imwrite(tmp_path / "in.tif", image, compression="zlib", rowsperstrip=64)
    tracemalloc.start()
    try:
        with SlideReader(tmp_path / "in.tif") as slide, \
                SlideWriter(tmp_path / "out.tif", slide.shape, slide.dtype, tile=band) as out:
            for y in range(0, size, band):
                out.write_rows(slide.read_rows(y, y + band))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), image)


def test_translate_a_file_in_bands(tmp_path: Path, rng: np.random.Generator) -> None:
    # Reader -> predict_tiled_rows -> writer gives what predict_tiled gives on the whole image.
    image = pixels(rng, 3, np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", image.transpose(1, 2, 0), tile=(32, 32), compression="zlib",
                     photometric="rgb")
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 1, 5, padding=2).eval()
    with SlideReader(tmp_path / "in.tif") as slide, \
            SlideWriter(tmp_path / "out.tif", (1, HEIGHT, WIDTH), np.float32, tile=64) as out:
        predict_tiled_rows(model, lambda y0, y1: torch.from_numpy(slide.read_rows(y0, y1)).float() / 255,
                           out.write_rows, slide.shape, tile=96, overlap=16)
    expected = predict_tiled(model, torch.from_numpy(image).float() / 255, tile=96, overlap=16)
    torch.testing.assert_close(torch.from_numpy(tifffile.imread(tmp_path / "out.tif"))[None], expected,
                               rtol=0, atol=1e-6)

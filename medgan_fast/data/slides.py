"""Slide-sized image files read and written a band of rows at a time.

:class:`SlideReader` gives rows ``[y0, y1)`` of an image as (C, rows, W); for a TIFF it
decodes only the strips or tiles that hold those rows, so reading a 10,000 x 10,000 slide
band by band never holds the whole image. :class:`SlideWriter` takes rows in order and
writes a zlib-compressed tiled TIFF as they come (PNG and JPEG are held and written at
close). Pixels follow :func:`~medgan_fast.data.images.read_image`: grey is C = 1, colour
C = 3, alpha is dropped, dtypes are uint8, uint16 or float32.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from tifffile import TIFF

from ..errors import DataError, OutputError
from ..outputs import AtomicPath
from .images import PIL_SUFFIXES, TIFF_SUFFIXES, read_image
from .lzw import lzw_decode

__all__ = ["SLIDE_SUFFIXES", "SlideReader", "SlideWriter"]

SLIDE_SUFFIXES = TIFF_SUFFIXES + PIL_SUFFIXES
_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
_LZW, _PALETTE = 5, 3  # TIFF Compression and Photometric codes


# ---------------------------------------------------------------------------------------
# Reading

class SlideReader:
    """One image file, read by rows.

    TIFF: the first series' full-resolution page (thumbnails, labels and pyramid levels are
    ignored), stripped or tiled, planar or contiguous samples, any compression tifffile
    decodes without extra packages (none, deflate/zlib, LZMA) plus LZW (a pure-Python
    decoder, about 2 MB/s, used unless imagecodecs is installed; JPEG and the rest need
    imagecodecs). Only the strips or tiles
    that hold the rows asked for are read and decoded; the ones that reach past the last row
    asked for are kept for the next band. An uncompressed strip is read row by row, so even
    a file stored as one strip streams; a compressed one-strip file is decoded whole (once).
    PNG and JPEG: Pillow decodes the whole image at open (it cannot decode part of one), so
    those files hold all their pixels while open.

    >>> with SlideReader("slide.tif") as slide:          # doctest: +SKIP
    ...     band = slide.read_rows(0, 512)                # (C, 512, W)

    Raises:
        DataError: naming the file, at open when it is unreadable, not one 2-D image, of a
        dtype other than 8/16-bit unsigned or float, or of other than 1-4 samples; from
        :meth:`read_rows` when a strip or tile cannot be decoded.
    """

    shape: tuple[int, int, int]  # (C, H, W), C = 1 or 3
    dtype: np.dtype  # uint8, uint16 or float32

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._tiff: tifffile.TiffFile | None = None
        self._image: np.ndarray | None = None
        self._cache: dict[int, np.ndarray] = {}
        suffix = self.path.suffix.lower()
        if suffix not in SLIDE_SUFFIXES:
            raise DataError(f"{self.path}: unsupported file type {suffix!r}; expected one of "
                            f"{', '.join(SLIDE_SUFFIXES)}")
        if suffix in PIL_SUFFIXES:
            self._open_pil()
            return
        try:
            self._tiff = tifffile.TiffFile(self.path)
            self._open_tiff(self._tiff)
        except BaseException as error:
            self.close()
            if isinstance(error, DataError) or not isinstance(error, Exception):
                raise
            # tifffile raises TiffFileError, OSError, ValueError, ... for a broken file
            raise DataError(f"{self.path}: cannot read as TIFF ({type(error).__name__}: {error})") from error

    def _open_pil(self) -> None:
        # A slide is far above Pillow's decompression-bomb limit (89 Mpixel); the caller
        # chose this file, so lift the limit for this one read.
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            self._image = read_image(self.path)
        finally:
            Image.MAX_IMAGE_PIXELS = limit
        self.shape = self._image.shape
        self.dtype = self._image.dtype

    def _open_tiff(self, tiff: tifffile.TiffFile) -> None:
        series = tiff.series[0] if tiff.series else None
        if series is None or len(series.pages) != 1 or series.pages[0] is None:
            shape = series.shape if series is not None else ()
            raise DataError(f"{self.path}: holds a stack of {len(series.pages) if series else 0} pages (shape "
                            f"{shape}); expected one 2-D image")
        page = series.pages[0].keyframe
        if page.imagedepth != 1:
            raise DataError(f"{self.path}: holds a volume (depth {page.imagedepth}); expected one 2-D image")
        if page.photometric == _PALETTE:
            raise DataError(f"{self.path}: a palette (indexed colour) TIFF; save it as RGB or grey")
        stored = page.dtype
        if stored is None or (stored not in _DTYPES and stored.kind != "f"):
            raise DataError(f"{self.path}: unsupported sample format ({stored}, {page.bitspersample}-bit); "
                            "expected 8- or 16-bit unsigned integers or float")
        samples = page.samplesperpixel
        if samples not in (1, 2, 3, 4):
            raise DataError(f"{self.path}: has {samples} samples per pixel; expected 1 (grey), 3 (RGB) or "
                            "2/4 (with alpha)")
        self._page = page
        self._stored = np.dtype(tiff.byteorder + stored.char)  # byte order of the raw segments
        self._channels = 1 if samples <= 2 else 3  # alpha dropped, as read_image does
        self._planes, _, height, width, _ = page.shaped  # (separate samples, depth, H, W, contig)
        self._planar = page.planarconfig == 2 and self._planes > 1
        self._segment_h, self._segment_w = (page.tilelength, page.tilewidth) if page.is_tiled else \
            (min(page.rowsperstrip or height, height), width)
        # Uncompressed strips are plain rows on disk: read just the rows asked for.
        self._raw_rows = (not page.is_tiled and page.compression == 1 and page.predictor == 1
                          and page.fillorder == 1 and page.bitspersample == 8 * stored.itemsize)
        self._own_lzw = page.compression == _LZW and _LZW not in TIFF.DECOMPRESSORS
        if self._own_lzw and page.predictor not in (1, 2):
            raise DataError(f"{self.path}: LZW with predictor {page.predictor} needs the imagecodecs package")
        if not self._own_lzw and not self._raw_rows:
            for table, code, what in ((TIFF.DECOMPRESSORS, page.compression, "compression"),
                                      (TIFF.UNPREDICTORS, page.predictor, "predictor")):
                if code != 1 and code not in table:  # tifffile lists codecs it has no package for
                    raise DataError(f"{self.path}: {what} {getattr(code, 'name', code)} needs the imagecodecs "
                                    "package, which is not installed")
        self.shape = (self._channels, height, width)
        self.dtype = np.dtype(np.float32) if stored.kind == "f" else stored

    # -----------------------------------------------------------------------------------

    def read_rows(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)``, 0 <= y0 < y1 <= H, as a (C, y1 - y0, W) array of :attr:`dtype`."""
        height = self.shape[1]
        if not (isinstance(y0, (int, np.integer)) and isinstance(y1, (int, np.integer)) and 0 <= y0 < y1 <= height):
            raise ValueError(f"{self.path}: read_rows expected 0 <= y0 < y1 <= {height}, got ({y0}, {y1})")
        if self._image is not None:
            return self._image[:, y0:y1].copy()
        if self._tiff is None:
            raise ValueError(f"{self.path}: read_rows on a closed SlideReader")
        try:
            rows = self._read_tiff_rows(int(y0), int(y1))  # (planes, rows, W, contig samples)
        except DataError:
            raise
        except Exception as error:  # decoders raise ValueError, zlib.error, OSError, ...
            raise DataError(f"{self.path}: cannot decode rows {y0}-{y1} ({type(error).__name__}: {error})") from error
        rows = rows.transpose(0, 3, 1, 2).reshape(-1, y1 - y0, self.shape[2])[:self._channels]
        return np.ascontiguousarray(rows, self.dtype)

    def _read_tiff_rows(self, y0: int, y1: int) -> np.ndarray:
        page, seg_h, seg_w = self._page, self._segment_h, self._segment_w
        width = self.shape[2]
        contig = page.shaped[-1]
        # Planes beyond the kept channels are alpha: never read them.
        planes = min(self._planes, self._channels) if self._planar else self._planes
        out = np.empty((planes, y1 - y0, width, contig), self._stored)
        across = -(-width // seg_w)
        down = -(-self.shape[1] // seg_h)
        kept: dict[int, np.ndarray] = {}
        for plane in range(planes):
            for row in range(y0 // seg_h, (y1 - 1) // seg_h + 1):
                top = row * seg_h
                a, b = max(y0, top), min(y1, top + seg_h)  # image rows of this segment row to copy
                for column in range(across):
                    index = (plane * down + row) * across + column
                    left = column * seg_w
                    target = out[plane, a - y0:b - y0, left:left + seg_w]
                    if self._raw_rows:
                        target[...] = self._raw_strip_rows(index, a - top, b - top)
                        continue
                    segment = self._cache.get(index)
                    if segment is None:
                        segment = self._segment(index, min(seg_h, self.shape[1] - top))
                    if top + seg_h > y1:
                        kept[index] = segment  # the next band starts inside this segment
                    target[...] = segment[a - top:b - top, :target.shape[1]]
        self._cache = kept
        return out

    def _read_bytes(self, offset: int, count: int) -> bytes:
        handle = self._tiff.filehandle
        with handle.lock:
            handle.seek(offset)
            return handle.read(count)

    def _raw_strip_rows(self, index: int, a: int, b: int) -> np.ndarray:
        """Rows ``[a, b)`` of uncompressed strip ``index``, as (b - a, W, contig samples)."""
        row_bytes = self.shape[2] * self._page.shaped[-1] * self._stored.itemsize
        data = self._read_bytes(self._page.dataoffsets[index] + a * row_bytes, (b - a) * row_bytes)
        if len(data) != (b - a) * row_bytes:
            raise DataError(f"{self.path}: truncated (strip {index} is shorter than its rows)")
        return np.frombuffer(data, self._stored).reshape(b - a, self.shape[2], -1)

    def _segment(self, index: int, rows: int) -> np.ndarray:
        """Strip or tile ``index`` decoded, as (rows, columns, contig samples); a strip holds
        ``rows`` rows, a tile its full tile size."""
        page = self._page
        count = page.databytecounts[index] if index < len(page.databytecounts) else 0
        shape = (self._segment_h if page.is_tiled else rows, self._segment_w, page.shaped[-1])
        if not count:  # a sparse file's missing segment
            return np.full(shape, page.nodata, self._stored)
        data = self._read_bytes(page.dataoffsets[index], count)
        if not self._own_lzw:
            jpeg = page.compression in (6, 7, 33007, 34892)  # what TiffPage.segments passes
            kwargs = {"jpegtables": page.jpegtables, "jpegheader": page.jpegheader} if jpeg else {}
            segment = page.decode(data, index, **kwargs)[0]  # (depth 1, rows, columns, samples)
            return segment.reshape(segment.shape[1:])
        values = np.frombuffer(lzw_decode(data), self._stored)
        if values.size < np.prod(shape):
            raise DataError(f"{self.path}: LZW segment {index} decodes to {values.size} samples, "
                            f"expected {np.prod(shape)}")
        values = values[:np.prod(shape)].reshape(shape).astype(self._stored.newbyteorder("="))
        # Predictor 2 stores each sample as the difference from its left neighbour.
        return np.cumsum(values, axis=1, dtype=values.dtype) if page.predictor == 2 else values

    # -----------------------------------------------------------------------------------

    def close(self) -> None:
        if self._tiff is not None:
            self._tiff.close()
        self._tiff, self._image, self._cache = None, None, {}

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------
# Writing

_ABORT = object()  # tells the TIFF thread to give up


class SlideWriter:
    """A (C, H, W) image written row band by row band, in order.

    TIFF (.tif, .tiff): zlib-compressed ``tile`` x ``tile`` tiles, contiguous samples
    (photometric RGB for C = 3, grey otherwise; BigTIFF past 4 GB), any C, uint8, uint16 or
    float32. Tiles because tifffile compresses a strip layout only from whole pages, while it
    takes tiles one by one from an iterator: a thread runs that write and is fed one band of
    ``tile`` rows at a time, so the writer holds about three bands, never the image.
    PNG (C = 1 uint8/uint16, C = 3 uint8) and JPEG (uint8, C = 1 or 3, quality 95) hold the
    whole image and write it at :meth:`close`.

    The file appears only when complete: rows go to a temporary file beside ``path``,
    renamed by :meth:`close` once all H rows came; an error, Ctrl-C, or closing with rows
    missing deletes it (an existing ``path`` is replaced only on success; check it first,
    e.g. with :func:`~medgan_fast.outputs.check_output_file`).

    >>> with SlideWriter("out.tif", (3, 10000, 10000), np.uint8) as out:   # doctest: +SKIP
    ...     for y in range(0, 10000, 512):
    ...         out.write_rows(band(y))                                   # (3, rows, 10000)

    Raises:
        OutputError: a suffix, dtype or channel count the format cannot store.
    """

    def __init__(self, path: str | Path, shape: tuple[int, int, int], dtype: np.dtype | type, *, tile: int = 256):
        self.path = Path(path)
        if len(shape) != 3 or not all(isinstance(n, (int, np.integer)) and n >= 1 for n in shape):
            raise ValueError(f"{self.path}: shape: expected (C, H, W) of positive integers, got {shape}")
        if tile < 16 or tile % 16:
            raise ValueError(f"{self.path}: tile: expected a multiple of 16 (TIFF needs it), got {tile}")
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self._format = _output_format(self.path, self.shape[0], self.dtype)
        self._tile = tile
        self._rows = 0
        self._closed = False
        self._atomic = AtomicPath(self.path)
        channels, height, width = self.shape
        if self._format != "TIFF":
            self._image = np.zeros(self.shape, self.dtype)
            return
        self._band = np.empty((channels, min(tile, height), width), self.dtype)
        self._band_rows = 0
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write_tiff, name=f"SlideWriter {self.path.name}", daemon=True)
        self._thread.start()

    def write_rows(self, rows: np.ndarray) -> None:
        """Appends ``rows``, (C, n, W) of :attr:`dtype`, below the rows written so far."""
        channels, height, width = self.shape
        rows = np.asarray(rows)
        if self._closed:
            raise ValueError(f"{self.path}: write_rows on a closed SlideWriter")
        if rows.ndim != 3 or rows.shape[0] != channels or rows.shape[2] != width:
            raise ValueError(f"{self.path}: write_rows expected ({channels}, rows, {width}), got {rows.shape}")
        if rows.dtype != self.dtype:
            raise ValueError(f"{self.path}: write_rows expected {self.dtype} rows, got {rows.dtype}")
        if self._rows + rows.shape[1] > height:
            raise ValueError(f"{self.path}: write_rows got {self._rows + rows.shape[1]} rows of {height}")
        if self._format != "TIFF":
            self._image[:, self._rows:self._rows + rows.shape[1]] = rows
            self._rows += rows.shape[1]
            return
        done = 0
        while done < rows.shape[1]:
            take = min(rows.shape[1] - done, self._band.shape[1] - self._band_rows)
            self._band[:, self._band_rows:self._band_rows + take] = rows[:, done:done + take]
            self._band_rows += take
            self._rows += take
            done += take
            if self._band_rows == self._band.shape[1]:
                self._put(self._band)
                self._band = np.empty((channels, min(self._tile, height - self._rows), width), self.dtype)
                self._band_rows = 0

    def close(self) -> None:
        """Finishes the file and renames it to :attr:`path`.

        Raises:
            ValueError: fewer than H rows were written (nothing is left on disk).
            OutputError: the file could not be written.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self._rows != self.shape[1]:
                raise ValueError(f"{self.path}: got {self._rows} of {self.shape[1]} rows; nothing written")
            if self._format == "TIFF":
                self._thread.join()
                if self._error is not None:
                    raise OutputError(f"{self.path}: cannot write ({type(self._error).__name__}: "
                                      f"{self._error})") from self._error
            else:
                image = self._image[0] if self.shape[0] == 1 else self._image.transpose(1, 2, 0)
                options = {"quality": 95} if self._format == "JPEG" else {}
                Image.fromarray(np.ascontiguousarray(image)).save(self._atomic.tmp, format=self._format, **options)
                self._image = None
            self._atomic.commit()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Stops writing and deletes the temporary file; :attr:`path` is left as it was."""
        self._closed = True
        if self._format == "TIFF" and self._thread.is_alive():
            self._put(_ABORT, raise_error=False)
            self._thread.join()
        self._image = self._band = None
        self._atomic.discard()

    def __enter__(self) -> SlideWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    # -----------------------------------------------------------------------------------

    def _put(self, item, raise_error: bool = True) -> None:
        # The thread may have died (disk full): never wait on a queue nobody empties.
        while self._thread.is_alive():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                pass
        if raise_error:
            error = self._error
            raise OutputError(f"{self.path}: cannot write ({type(error).__name__}: {error})") from error

    def _write_tiff(self) -> None:
        channels, height, width = self.shape
        big = channels * height * width * self.dtype.itemsize > 2**32 - 2**25  # tifffile's own margin
        try:
            with tifffile.TiffWriter(self._atomic.tmp, bigtiff=big) as tiff:
                tiff.write(self._tiles(), shape=(height, width) if channels == 1 else (height, width, channels),
                           dtype=self.dtype, tile=(self._tile, self._tile), compression="zlib",
                           photometric="rgb" if channels == 3 else "minisblack",
                           planarconfig="contig" if channels > 1 else None, metadata=None, maxworkers=1)
        except BaseException as error:  # reported by close() (or the abort it asked for)
            self._error = error

    def _tiles(self):
        """Tiles in file order (row-major, contiguous samples), (rows, columns[, C]) each;
        tifffile pads the ones at the right and bottom edges."""
        while True:
            band = self._queue.get()
            if band is _ABORT:
                raise RuntimeError("aborted")
            for x in range(0, self.shape[2], self._tile):
                tile = band[:, :, x:x + self._tile].transpose(1, 2, 0)
                yield tile[..., 0] if self.shape[0] == 1 else tile


def _output_format(path: Path, channels: int, dtype: np.dtype) -> str:
    """"TIFF", "PNG" or "JPEG" for ``path``, if that format stores such pixels."""
    suffix = path.suffix.lower()
    kind = "TIFF" if suffix in TIFF_SUFFIXES else "PNG" if suffix == ".png" else \
        "JPEG" if suffix in (".jpg", ".jpeg") else None
    if kind is None:
        raise OutputError(f"{path}: expected a file name ending in {' or '.join(SLIDE_SUFFIXES)}")
    stores, takes = {
        "TIFF": (dtype in _DTYPES, "uint8, uint16 or float32 pixels"),
        "PNG": ((channels == 1 and dtype in _DTYPES[:2]) or (channels == 3 and dtype == np.uint8),
                "grey uint8/uint16 or RGB uint8"),
        "JPEG": (channels in (1, 3) and dtype == np.uint8, "grey or RGB uint8"),
    }[kind]
    if not stores:
        raise OutputError(f"{path}: {kind} output takes {takes}, not {channels} channel(s) of {dtype}"
                          + ("" if kind == "TIFF" else "; write a .tif"))
    return kind

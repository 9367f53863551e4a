"""TIFF's LZW decompression in pure Python, for slides when the imagecodecs package (which
tifffile uses for LZW) is not installed: about 2.5 MB/s, so a 10,000 x 10,000 RGB slide
takes some two minutes; with imagecodecs tifffile's own decoder is used instead."""

from __future__ import annotations

__all__ = ["lzw_decode"]


def lzw_decode(data: bytes) -> bytes:
    """TIFF LZW: MSB-first codes of 9 to 12 bits, 256 clears the table, 257 ends; the code
    width grows one code early (at 511, 1023, 2047 entries), as libtiff writes it."""
    out = bytearray()
    table = [bytes([i]) for i in range(256)] + [b"", b""]
    width, mask, buffer, bits, previous = 9, 511, 0, 0, b""
    for byte in data:
        buffer = (buffer << 8) | byte
        bits += 8
        if bits < width:  # widths are > 8, so a byte completes at most one code
            continue
        bits -= width
        code = (buffer >> bits) & mask
        buffer &= (1 << bits) - 1
        if code == 256:
            del table[258:]
            width, mask, previous = 9, 511, b""
            continue
        if code == 257:
            break
        if code < len(table):
            entry = table[code]
            if previous:
                table.append(previous + entry[:1])
        elif previous:  # the code being defined right now: previous + its own first byte
            entry = previous + previous[:1]
            table.append(entry)
        else:
            raise ValueError(f"LZW code {code} before any string")
        out += entry
        previous = entry
        if len(table) >= mask and width < 12:
            width += 1
            mask = (1 << width) - 1
    return bytes(out)

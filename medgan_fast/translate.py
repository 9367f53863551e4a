"""`python -m medgan_fast.translate`: a trained CycleGAN over images or whole slides, tile by
tile without seams.

Thin: the arguments become a :class:`medgan_fast.jobs.translation.TranslateConfig`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import cli
from .jobs.translation import DIRECTIONS, TranslateConfig, translate

PROG = "python -m medgan_fast.translate"
ANHIR = "../shared/data/histo_anhir_he_ihc"

EPILOG = f"""\
examples (train, then translate tiles and one whole image):
  python -m medgan_fast.train --config configs/cyclegan_anhir.yaml
  {PROG} --checkpoint runs/cyclegan_anhir/checkpoints/last.pt --direction AtoB \\
      --input {ANHIR}/tiles128/trainA_HE --out he_as_ihc/
  {PROG} --checkpoint runs/cyclegan_anhir/checkpoints/last.pt --direction AtoB \\
      --input slide_he.tif --out slide_ihc.tif --tile 256 --overlap 32

--input is one image (TIFF of any size, read and written a band of tiles at a time; PNG or
JPEG) or a folder of them; --out is then a file (.tif or .png) or a folder (TIFFs stay TIFF,
the rest become PNG). Large images are normalised with the statistics of one thumbnail pass,
so tiles do not show seams; the overlaps are blended.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Translate images with a CycleGAN generator (H&E to a rare stain, "
                                                 "or back), whole slides in tiles without seams.")
    parser.add_argument("--checkpoint", type=Path, metavar="CKPT", help="checkpoint of an arch CycleGAN run")
    parser.add_argument("--direction", choices=tuple(DIRECTIONS), help="AtoB (G: data_a -> data_b) or BtoA")
    parser.add_argument("--input", type=Path, metavar="PATH", help="an image file or a folder of images")
    parser.add_argument("--out", type=Path, metavar="PATH", help="the file (for a file) or folder to write")
    parser.add_argument("--tile", type=int, default=TranslateConfig.tile, help="tile side in pixels (default 256)")
    parser.add_argument("--overlap", type=int, default=TranslateConfig.overlap,
                        help="pixels shared by neighbouring tiles, blended (default 32)")
    parser.add_argument("--batch-size", type=int, default=TranslateConfig.batch_size, metavar="B",
                        help="tiles per forward pass (default 8)")
    parser.add_argument("--thumbnail", type=int, default=TranslateConfig.thumbnail, metavar="PX",
                        help="longer side of the thumbnail whose statistics normalise every tile (default 1024)")
    parser.add_argument("--device", default=TranslateConfig.device, help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


def run(args: argparse.Namespace) -> str:
    cli.require(args, PROG, "--checkpoint", "--direction", "--input", "--out")
    return translate(TranslateConfig(
        checkpoint=args.checkpoint, direction=args.direction, input=args.input, out=args.out, tile=args.tile,
        overlap=args.overlap, batch_size=args.batch_size, thumbnail=args.thumbnail, device=args.device,
        progress=args.progress, overwrite=args.overwrite))


def main(argv: list[str] | None = None) -> None:
    cli.main("translate", build_parser, run, argv)


if __name__ == "__main__":
    main()

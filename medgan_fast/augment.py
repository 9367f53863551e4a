"""`python -m medgan_fast.augment`: synthetic (image, mask) pairs from a mask GAN and a mask -> image GAN.

Thin: the arguments become a :class:`medgan_fast.jobs.augmentation.AugmentConfig`.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from . import cli
from .jobs.augmentation import AugmentConfig, synthesize_pairs

PROG = "python -m medgan_fast.augment"

EPILOG = f"""\
example (the two GAN stages on organelle patches, then the pairs into segmentation):
  python -m medgan_fast.patches --images EM/ --masks MASKS/ --mode mask --size 64 --out masks.h5
  python -m medgan_fast.patches --images EM/ --masks MASKS/ --mode full --size 64 --out pairs.h5
  python -m medgan_fast.train --set data=masks.h5 --set number_channels=1 --set run=mask_gan
  python -m medgan_fast.train --set arch=Mask2Image --set data=pairs.h5 --set number_channels=1 --set run=image_gan
  {PROG} --mask-gan runs/mask_gan/checkpoints/last.pt --image-gan runs/image_gan/checkpoints/last.pt \\
      --quantity 500 --out synthetic.h5

writes synthetic.h5 (a patch set: images, masks, meta) and synthetic_contact_sheet.png (the
first 32 pairs, mask beside image), which python -m medgan_fast.segment train --extra reads.
The same --seed and --batch-size give the same set.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Draw masks from a mask GAN (DCGAN/SNGAN on mask patches), paint an "
                                                 "image for each with a mask -> image GAN (arch Mask2Image), and "
                                                 "write the pairs as a patch set for segment train --extra.")
    parser.add_argument("--mask-gan", type=Path, metavar="CKPT", help="checkpoint of the mask GAN")
    parser.add_argument("--image-gan", type=Path, metavar="CKPT",
                        help="checkpoint of the Mask2Image GAN")
    parser.add_argument("--quantity", type=int, metavar="N", help="pairs to write")
    parser.add_argument("--out", type=Path, metavar="FILE.h5", help="the patch set to write")
    parser.add_argument("--seed", type=int, default=AugmentConfig.seed, help="default 0")
    parser.add_argument("--batch-size", type=int, default=AugmentConfig.batch_size, metavar="B", help="default 64")
    parser.add_argument("--threshold", type=float, default=AugmentConfig.threshold, metavar="T",
                        help="a mask is the mask GAN's output > T, in its [-1, 1] range (default 0)")
    parser.add_argument("--real-areas", action="store_true",
                        help="keep only masks whose components all have areas within the range of the image GAN's "
                             "training masks")
    parser.add_argument("--device", default=AugmentConfig.device, help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out and its contact sheet")
    return parser


def run(args: argparse.Namespace) -> str:
    cli.require(args, PROG, "--mask-gan", "--image-gan", "--quantity", "--out")
    return str(synthesize_pairs(AugmentConfig(
        mask_gan=args.mask_gan, image_gan=args.image_gan, quantity=args.quantity, out=args.out, seed=args.seed,
        batch_size=args.batch_size, threshold=args.threshold, real_areas=args.real_areas, device=args.device,
        progress=args.progress, overwrite=args.overwrite, command=f"{PROG} {shlex.join(args.argv)}")))


def main(argv: list[str] | None = None) -> None:
    cli.main("augment", build_parser, run, argv)


if __name__ == "__main__":
    main()

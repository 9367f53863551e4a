"""`python -m medgan_fast.generate`: images from a trained generator, as PNG files or an HDF5 set.

Thin: arguments -> :class:`~medgan_fast.jobs.generation.GenerateConfig` ->
:func:`~medgan_fast.jobs.generation.generate` -> what was written.
"""

from __future__ import annotations

import argparse
import shlex

from . import cli
from .jobs.generation import GenerateConfig, generate

PROG = "python -m medgan_fast.generate"

EPILOG = f"""\
examples:
  python -m medgan_fast.train
      makes a checkpoint first: runs/dcgan64_sample/checkpoints/last.pt
  {PROG} --checkpoint runs/dcgan64_sample/checkpoints/last.pt --quantity 64 --out generated
      64 PNG files generated/000000.png .. 000063.png
  {PROG} --checkpoint runs/dcgan64_sample/checkpoints/last.pt --quantity 1000 --out fakes.h5 --seed 1
      one HDF5 file in the patch-set layout: images (1000, C, S, S) uint8, masks, meta, attributes
  {PROG} --checkpoint runs/dcgan64_sample/checkpoints/last.pt --quantity 64 --out typical --truncation 1.0
      truncation trick: latent entries with |z| > 1.0 are redrawn (less variety, more typical images)
  {PROG} --checkpoint runs/stylegan2_sample/checkpoints/last.pt --quantity 16 --out typical --truncation-psi 0.7
      StyleGAN2: w pulled towards its mean, w_avg + 0.7 (w - w_avg), from its moving-average generator

The same --seed gives the same images, whatever --batch-size: image i's latent vector is
drawn from a generator seeded with (seed, i).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write images from the generator of a checkpoint made by python -m medgan_fast.train "
                    "(DCGAN, SNGAN or StyleGAN2): 8-bit grey or RGB PNG files in a folder, or an HDF5 set.")
    parser.add_argument("--checkpoint", metavar="FILE", help="a training checkpoint, e.g. runs/RUN/checkpoints/last.pt")
    parser.add_argument("--quantity", type=int, default=GenerateConfig.quantity, metavar="N",
                        help=f"images to write (default {GenerateConfig.quantity})")
    parser.add_argument("--out", metavar="DIR|FILE.h5", default=str(GenerateConfig.out),
                        help=f"a folder for PNG files, or an .h5 file (default {GenerateConfig.out})")
    parser.add_argument("--seed", type=int, default=GenerateConfig.seed, help="latent seed (default 0)")
    parser.add_argument("--batch-size", type=int, default=GenerateConfig.batch_size, metavar="B",
                        help=f"images per forward pass (default {GenerateConfig.batch_size}); does not change them")
    parser.add_argument("--truncation", type=float, metavar="T",
                        help="redraw latent entries with |z| > T (truncation trick; e.g. 1.0; default none)")
    parser.add_argument("--truncation-psi", type=float, metavar="PSI",
                        help="StyleGAN2 only: w = w_avg + PSI (w - w_avg), PSI in [0, 1] (e.g. 0.7; default 1)")
    parser.add_argument("--device", default=GenerateConfig.device,
                        help="auto (CUDA when available), cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out: a folder's PNG files are deleted first, an .h5 file is "
                             "replaced when the new one is complete; without it they are never replaced")
    return parser


def run(args: argparse.Namespace) -> str:
    if args.checkpoint is None:
        raise cli.UsageError("--checkpoint FILE is required: a checkpoint made by `python -m medgan_fast.train` "
                             "(with no arguments it trains on the embedded sample and writes "
                             "runs/dcgan64_sample/checkpoints/last.pt)")
    config = GenerateConfig(checkpoint=args.checkpoint, quantity=args.quantity, out=args.out, seed=args.seed,
                            batch_size=args.batch_size, truncation=args.truncation,
                            truncation_psi=args.truncation_psi, device=args.device,
                            progress=args.progress, overwrite=args.overwrite,
                            command=f"{PROG} {shlex.join(args.argv)}")
    return str(generate(config))


def main(argv: list[str] | None = None) -> None:
    cli.main("generate", build_parser, run, argv)


if __name__ == "__main__":
    main()

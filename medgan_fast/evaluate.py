"""`python -m medgan_fast.evaluate`: generated images against real ones (PSNR, SSIM, MS-GMSD, HaarPSI, SWD, ...).

Thin: arguments -> :class:`~medgan_fast.jobs.evaluation.EvaluateConfig` ->
:func:`~medgan_fast.jobs.evaluation.evaluate` -> the table, and the JSON file written.
"""

from __future__ import annotations

import argparse
import shlex
import textwrap

from . import cli
from .errors import Interrupted
from .jobs.evaluation import DEMO_COUNT, DEMO_SIZE, EvaluateConfig, evaluate
from .metrics.comparison import DEFAULT_METRICS, HIGHER_IS_BETTER, PAIRED_METRICS, SET_METRICS
from .outputs import AtomicPath

PROG = "python -m medgan_fast.evaluate"

EPILOG = f"""\
examples:
  {PROG}
      a demo on the embedded sample: {DEMO_COUNT} random {DEMO_SIZE} px crops as the real set against
      {DEMO_COUNT} other crops, blurred and noised, as a stand-in for generated images; writes
      ./evaluation.json
  {PROG} --real patches.h5 --fake runs/dcgan64_sample/checkpoints/last.pt --quantity 256
      generates 256 images from the checkpoint (the ones `python -m medgan_fast.generate
      --quantity 256 --seed 0` writes) and compares them with the patch set
  {PROG} --real patches.h5 --fake fakes/ --metrics ssim,ms_gmsd,haarpsi,swd --out fakes.json
      the PNGs `python -m medgan_fast.generate ... --out fakes/` wrote, four metrics
  {PROG} --real ../shared/data/emps/images --fake emps_fakes.h5 --data-range 255
      --data-range: the stored value of white (default: 8-bit / 255, 16-bit / 65535; 4095
      for 12-bit data stored in 16-bit TIFFs)
  {PROG} --real patches.h5 --fake fakes/ --inception inception-2015-12-05.pt
      adds FID and KID (a local TorchScript Inception-v3 file; nothing is downloaded)

--real and --fake: a folder of images (PNG, JPEG, TIFF, NPY; subfolders too), an HDF5 set
(images (N, C, H, W), as `patches` and `generate` write them) or one image; --fake may also be
a training checkpoint (.pt). Images are read as floats in [0, 1] (a checkpoint's as the 8-bit
images generate writes). The fake images must share one size and channel count; the real
images must have the same channels and are resized to cover the fakes' size and
centre-cropped to it (the fakes are never changed).

{textwrap.fill("Pairing of the paired (full-reference) metrics " + ", ".join(PAIRED_METRICS) + ": a generated "
               "image has no true twin, so each fake image f_i is compared with every real image, or when there "
               "are more than K (--pairs-per-image, default 64) with K distinct ones drawn by numpy "
               "default_rng((seed, i)); its score is the mean over those pairs (x = fake, y = real, as piq's "
               "distorted and reference images), and the value reported is the mean over the fake images (std in "
               "the JSON: over the fake images). Metrics whose size limits the images miss (MS-SSIM: 161 px, "
               "HaarPSI: 16 px) are listed as skipped.", 94)}

Set metrics: swd (sliced Wasserstein distance of Laplacian-pyramid patches, x 1e3),
ms_ssim_diversity (mean MS-SSIM of random pairs of fakes; the real set's value is shown
beside it), fid and kid (only with --inception).

{textwrap.fill("directions: " + ", ".join(f"{name} {'higher' if HIGHER_IS_BETTER[name] else 'lower'}"
                                           for name in (*PAIRED_METRICS, *SET_METRICS)) + " is better.", 88)}
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compare generated images with real ones: full-reference quality metrics (each fake image "
                    "against the real images), set metrics (SWD, MS-SSIM diversity, FID/KID), a table and a JSON "
                    "file. With no arguments, runs a demo on the embedded sample.")
    inputs = parser.add_argument_group("inputs (give neither for the demo on the embedded sample)")
    inputs.add_argument("--real", metavar="PATH", help="real images: a folder, an HDF5 set (.h5) or an image file")
    inputs.add_argument("--fake", metavar="PATH", help="generated images: a folder, an HDF5 set, an image file or "
                                                       "a training checkpoint (.pt)")
    metrics = parser.add_argument_group("metrics")
    metrics.add_argument("--metrics", metavar="LIST",
                         help="comma-separated metric names, e.g. ssim,haarpsi,swd (default: all of them; see "
                              "below)")
    metrics.add_argument("--data-range", type=float, metavar="R",
                         help="stored value of white: images are divided by R (default: by dtype, 8-bit / 255, "
                              "16-bit / 65535, float as is)")
    metrics.add_argument("--pairs-per-image", type=int, default=EvaluateConfig.pairs_per_image, metavar="K",
                         help="real images each fake image is compared with, drawn at random when there are more "
                              "(default %(default)s; 0: all)")
    metrics.add_argument("--inception", metavar="FILE.pt",
                         help="local Inception-v3 TorchScript weights (e.g. inception-2015-12-05.pt) for fid and "
                              "kid; without it they are skipped")
    run = parser.add_argument_group("run")
    run.add_argument("--out", metavar="FILE.json", default=str(EvaluateConfig.out),
                     help="JSON file of the results (default %(default)s)")
    run.add_argument("--quantity", type=int, default=EvaluateConfig.quantity, metavar="N",
                     help="images to generate when --fake is a checkpoint (default %(default)s)")
    run.add_argument("--batch-size", type=int, default=EvaluateConfig.batch_size, metavar="B",
                     help="image pairs per metric call and images per generator pass (default %(default)s); does "
                          "not change the results")
    run.add_argument("--seed", type=int, default=EvaluateConfig.seed, metavar="S",
                     help="latent seed of a checkpoint (as generate's --seed), and the seed of the random pairs "
                          "and projections (default %(default)s)")
    run.add_argument("--device", default=EvaluateConfig.device,
                     help="auto (CUDA when available), cpu, cuda or cuda:N (default %(default)s)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing --out; without it, it is never "
                                                               "replaced")
    return parser


def config_from_args(args: argparse.Namespace) -> EvaluateConfig:
    """The job's config from the parsed arguments. Raises DataError for a bad value."""
    metrics = DEFAULT_METRICS if args.metrics is None else args.metrics
    return EvaluateConfig(real=args.real, fake=args.fake, metrics=metrics, data_range=args.data_range,
                          out=args.out, quantity=args.quantity, batch_size=args.batch_size, seed=args.seed,
                          pairs_per_image=args.pairs_per_image, inception=args.inception, device=args.device,
                          progress=args.progress, overwrite=args.overwrite,
                          command=f"{PROG} {shlex.join(args.argv)}".rstrip())


def run(args: argparse.Namespace) -> str:
    config = config_from_args(args)
    try:
        result = evaluate(config)
    except KeyboardInterrupt:
        if config.out is not None:
            AtomicPath.discard_leftovers(config.out)
        raise Interrupted(f"nothing written: {config.out} was not created or changed")
    if config.is_demo:
        return (f"{result}\n(a demo on the embedded sample; for your images: {PROG} --real DIR|FILE.h5 "
                "--fake DIR|FILE.h5|FILE.pt)")
    return str(result)


def main(argv: list[str] | None = None) -> None:
    cli.main("evaluate", build_parser, run, argv)


if __name__ == "__main__":
    main()

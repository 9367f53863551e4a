"""`python -m medgan_fast.patches`: images + masks -> HDF5 patch set of one patch per component.

Thin: arguments -> :class:`~medgan_fast.data.patches.PatchesConfig` ->
:func:`~medgan_fast.data.patches.extract_patches` -> summary.
"""

from __future__ import annotations

import argparse
import shlex

from . import cli
from .errors import Interrupted
from .data.patches import CONTACT_SHEET_PATCHES, PatchesConfig, extract_patches
from .data.sample import SAMPLE_NAME, SAMPLE_PATCH_SETTINGS
from .ops.components import CROP_MODES

PROG = "python -m medgan_fast.patches"

EPILOG = f"""\
examples:
  {PROG}
      run on the embedded sample ({SAMPLE_NAME}, nuclei mask): writes
      ./patches.h5 and ./patches_contact_sheet.png
  {PROG} --images emps/images --masks emps/segmaps --out emps.h5 --instances --min-area 20
      one 250 px patch per particle of the EMPS data set; each instance id of the
      16-bit segmaps is its own component
  {PROG} --images raw --masks mitochondria --out mito.h5 --mode texture --size 128
  {PROG} --volume stack.h5 --image-key raw --mask-key labels --out stack_patches.h5

Images and masks are paired by file stem (images/001.png with masks/001.tif). Masks:
nonzero = foreground. The patch set holds datasets images (N, C, H, W), masks
(N, 1, H, W) and a meta table (source, slice, component, bbox, area, dilation).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Crop a square patch around each connected component of the masks (GPU-ready "
                    "labelling and cropping kernels) and write them as an HDF5 patch set, plus a contact "
                    f"sheet of the first {CONTACT_SHEET_PATCHES} patches. With no inputs, runs on the "
                    "embedded sample.")
    inputs = parser.add_argument_group("inputs (give none to run on the embedded sample)")
    inputs.add_argument("--images", metavar="DIR", help="folder of images: PNG, TIFF (8/16-bit), NPY or JPEG")
    inputs.add_argument("--masks", metavar="DIR", help="folder of masks with the images' file stems")
    inputs.add_argument("--split", metavar="FILE.csv",
                        help="crop only the images whose ids this CSV lists (e.g. EMPS's train.csv)")
    inputs.add_argument("--volume", metavar="FILE.h5",
                        help="HDF5 file with a 3-D stack instead; each z slice is labelled and cropped on its own")
    inputs.add_argument("--image-key", metavar="K", help="--volume's dataset of images, (D, H, W) or (D, H, W, C)")
    inputs.add_argument("--mask-key", metavar="K", help="--volume's dataset of masks, (D, H, W)")

    output = parser.add_argument_group("output")
    output.add_argument("--out", metavar="FILE.h5",
                        help="patch set to write (required with inputs; default for the sample: patches.h5)")
    output.add_argument("--no-contact-sheet", dest="contact_sheet", action="store_false", default=None,
                        help="do not write FILE_contact_sheet.png beside --out")
    output.add_argument("--overwrite", action="store_true", default=None,
                        help="replace an existing --out (and its contact sheet); without it they are never replaced")

    settings = parser.add_argument_group("patches")
    settings.add_argument("--size", type=int, metavar="N",
                          help=f"patch side in pixels (default {PatchesConfig.size}; "
                               f"sample {SAMPLE_PATCH_SETTINGS['size']})")
    settings.add_argument("--mode", choices=CROP_MODES,
                          help="mask: the component's mask (0/255); texture: the image inside the dilated "
                               "component, zero elsewhere; full: the whole image patch "
                               f"(default {PatchesConfig.mode}; sample {SAMPLE_PATCH_SETTINGS['mode']})")
    settings.add_argument("--dilation", type=int, metavar="N",
                          help=f"disk radius grown around the component in mode texture "
                               f"(default {PatchesConfig.dilation})")
    settings.add_argument("--min-area", type=int, metavar="N",
                          help=f"drop components with fewer pixels (default {PatchesConfig.min_area})")
    settings.add_argument("--connectivity", type=int, choices=(1, 2),
                          help=f"1: 4-neighbour, 2: 8-neighbour (default {PatchesConfig.connectivity})")
    settings.add_argument("--threshold", type=float, metavar="T",
                          help="foreground is mask value >= T (default: nonzero); needed for masks saved as JPEG, "
                               "whose lossy compression leaves many grey levels")
    settings.add_argument("--instances", action="store_true", default=None,
                          help="masks hold instance ids: each id is its own component (no relabelling)")

    run = parser.add_argument_group("run")
    run.add_argument("--device", help=f"cpu, cuda or cuda:N (default {PatchesConfig.device})")
    run.add_argument("--impl", choices=("auto", "kernel", "reference"),
                     help="ops implementation: auto (compiled kernels when built), kernel, or reference "
                          "(plain SciPy/PyTorch, for cross-checks) (default auto)")
    return parser


def config_from_args(args: argparse.Namespace) -> PatchesConfig:
    """The job's config: the arguments given, over the sample's or the standard defaults."""
    given = {name: value for name, value in vars(args).items()
             if value is not None and name not in ("argv", "debug")}
    given["command"] = f"{PROG} {shlex.join(args.argv)}".rstrip()
    if not any(name in given for name in ("images", "masks", "split", "volume")):
        return PatchesConfig.for_sample(**given)
    if "out" not in given:
        raise cli.UsageError("--out FILE.h5 is required with --images/--masks or --volume")
    return PatchesConfig(**given)


def run(args: argparse.Namespace) -> str:
    config = config_from_args(args)
    try:
        summary = extract_patches(config)
    except KeyboardInterrupt:
        raise Interrupted(f"nothing written: {config.out} was not created or changed")
    if config.is_sample:
        return f"{summary}\n(the embedded sample; for your data: {PROG} --images DIR --masks DIR --out FILE.h5)"
    return str(summary)


def main(argv: list[str] | None = None) -> None:
    cli.main("patches", build_parser, run, argv)


if __name__ == "__main__":
    main()

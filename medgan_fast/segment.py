"""`python -m medgan_fast.segment train|evaluate|predict`: U-Net segmentation.

Thin: ``train`` turns its arguments into the overrides of a ``train`` run with arch UNet
(:mod:`medgan_fast.training.segmentation`) and calls the one training loop; ``evaluate`` and
``predict`` call :mod:`medgan_fast.jobs.segmentation`.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from . import cli
from .jobs.segmentation import PredictConfig, ScoreConfig, evaluate_segmentation, predict_masks
from .training import load_config, train
from .training.config import read_yaml
from .training.segmentation import LOSSES

PROG = "python -m medgan_fast.segment"
EMPS = "../shared/data/emps"

EPILOG = f"""\
examples:
  {PROG} train
      a U-Net on the embedded sample (16 tiles of scikit-image's immunohistochemistry image and
      a nuclei mask made from its stain), about a minute on a 2-core CPU; writes runs/unet_sample/
  {PROG} train --images {EMPS}/images --masks {EMPS}/segmaps --split {EMPS}/train.csv \\
      --image-size 128 --epochs 30 --run unet_emps
  {PROG} evaluate --checkpoint runs/unet_emps/checkpoints/best.pt --images {EMPS}/images \\
      --masks {EMPS}/segmaps --split {EMPS}/test.csv --out emps_test.json
  {PROG} predict --checkpoint runs/unet_emps/checkpoints/best.pt --images {EMPS}/images \\
      --split {EMPS}/test.csv --out emps_test_masks/

train writes <out>/<run>/: config.yaml, log.jsonl, loss.png (training and validation),
samples/validation_epoch_NNNN.png (9 validation images, predicted mask red, true contour
green), checkpoints/best.pt (the best --monitor, default val_dice max) and last.pt. It is
`python -m medgan_fast.train --set arch=UNet ...`: --config and --set take every train key
(python -m medgan_fast.train --help lists UNet's own keys).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="U-Net segmentation: train, evaluate, predict.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="action", metavar="train|evaluate|predict")

    fit = commands.add_parser("train", help="train a U-Net (no arguments: on the embedded sample)",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    fit.add_argument("--images", type=Path, help="image folder (PNG, TIFF 8/16-bit, NPY); default: the sample")
    fit.add_argument("--masks", type=Path, help="mask folder, paired with the images by file stem")
    fit.add_argument("--split", type=Path, help="CSV of the image ids to train on (e.g. EMPS's train.csv)")
    fit.add_argument("--val-fraction", type=float, metavar="F",
                     help="fraction of the training images held out for validation (default 0.1)")
    fit.add_argument("--image-size", type=int, help="images are resized to it (default 128)")
    fit.add_argument("--epochs", type=int, help="default 30")
    fit.add_argument("--batch-size", type=int, help="default 8")
    fit.add_argument("--lr", type=float, help="Adam learning rate (default 0.001)")
    fit.add_argument("--lr-schedule", choices=("constant", "cosine"),
                     help="cosine: the rate falls to zero over the epochs (default constant)")
    fit.add_argument("--loss", choices=LOSSES, help="default bce+dice")
    fit.add_argument("--augment", choices=("none", "classical"),
                     help="classical: flips, 90-degree turns, elastic deformation (default)")
    fit.add_argument("--extra", type=Path, nargs="+", metavar="FILE.h5",
                     help="(image, mask) patch sets mixed into training only")
    fit.add_argument("--num-classes", type=int, help="1: binary (default); >= 2: class maps")
    fit.add_argument("--monitor", help="best.pt's metric (default 'val_dice max')")
    fit.add_argument("--out", help="runs go to OUT/RUN/ (default runs)")
    fit.add_argument("--run", help="run name (default unet_sample, or unet<image size>)")
    fit.add_argument("--config", type=Path,
                     help="a train YAML file with arch UNet (configs/segment_emps.yaml); options given here override "
                          "it, the defaults above do not")
    fit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any train key")

    score = commands.add_parser("evaluate", help="IoU, Dice and accuracy of a checkpoint on a test set",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    score.add_argument("--checkpoint", type=Path, required=True, help="checkpoints/best.pt of a segment train run")
    score.add_argument("--images", type=Path, required=True)
    score.add_argument("--masks", type=Path, required=True)
    score.add_argument("--split", type=Path, help="CSV of the test image ids (e.g. EMPS's test.csv)")
    score.add_argument("--threshold", type=float, default=0.5, help="foreground: probability > it (default 0.5)")
    score.add_argument("--ignore-empty", action="store_true",
                       help="leave out images whose true mask is empty (MONAI's rule); default: both empty scores 1")
    score.add_argument("--out", type=Path, help="JSON file of the scores (mean, sd, per image)")
    score.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    score.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    masks = commands.add_parser("predict", help="write the predicted mask of every image",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    masks.add_argument("--checkpoint", type=Path, required=True)
    masks.add_argument("--images", type=Path, required=True)
    masks.add_argument("--split", type=Path, help="only the image ids of this CSV (e.g. EMPS's test.csv)")
    masks.add_argument("--out", type=Path, required=True, help="folder for the mask PNGs (0/255, or class ids)")
    masks.add_argument("--threshold", type=float, default=0.5, help="foreground: probability > it (default 0.5)")
    masks.add_argument("--tile", type=int, help="segment at the image's own resolution in tiles of this side")
    masks.add_argument("--overlap", type=int, default=32, help="pixels shared by neighbouring tiles (default 32)")
    masks.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    masks.add_argument("--overwrite", action="store_true", help="replace the masks already in --out")
    return parser


# segment train's options and the train keys they set; the defaults apply without --config.
TRAIN_KEYS = {"images": "data", "masks": "masks", "split": "split", "val_fraction": "val_fraction",
              "image_size": "image_size", "epochs": "num_epochs", "batch_size": "batch_size", "lr": "learning_rate",
              "lr_schedule": "lr_schedule", "loss": "segmentation_loss", "augment": "augment", "extra": "extra", "num_classes": "num_classes",
              "monitor": "monitor", "out": "out", "run": "run"}
TRAIN_DEFAULTS = {"val_fraction": 0.1, "image_size": 128, "epochs": 30, "batch_size": 8, "lr": 1e-3,
                  "loss": "bce+dice", "augment": "classical", "num_classes": 1, "monitor": "val_dice max",
                  "out": "runs", "loader_workers": 0}


def train_overrides(args: argparse.Namespace) -> list[str]:
    """The train --set overrides that `segment train` arguments mean: those given, and
    without --config the defaults (the embedded sample without --images)."""
    given = {dest: getattr(args, dest) for dest in TRAIN_KEYS if getattr(args, dest) not in (None, [])}
    settings = {"arch": "UNet"}
    if args.config is None:
        if "images" not in given and ("masks" in given or "split" in given):
            raise cli.UsageError("--masks and --split need --images (without it the embedded sample is used)")
        if "images" in given and "masks" not in given:
            raise cli.UsageError("--masks DIR is required with --images: the masks, paired with the images by file "
                                 "stem")
        sample = "images" not in given
        given = {**TRAIN_DEFAULTS, **given}
        given.setdefault("run", "unet_sample" if sample else f"unet{given['image_size']}")
        settings.update(data="sample" if sample else None, number_channels=3 if sample else 1,
                        loader_workers=given.pop("loader_workers"))
        if sample:
            settings.update(sample_every=5, checkpoint_every=0, log_every=2)
    for dest, value in given.items():
        settings[TRAIN_KEYS[dest]] = ",".join(map(str, value)) if isinstance(value, list) else value
    return [f"{key}={value}" for key, value in settings.items() if value is not None] + list(args.set)


def run(args: argparse.Namespace) -> str:
    if args.action is None:
        raise cli.UsageError("give an action: train, evaluate or predict (e.g. python -m medgan_fast.segment train)")
    if args.action == "train":
        if args.config is not None:
            arch = read_yaml(args.config).get("arch", "UNet")
            if str(arch).lower() != "unet":
                raise cli.UsageError(f"--config {args.config}: arch {arch}; segment train trains arch UNet (use "
                                     "python -m medgan_fast.train for other architectures)")
        config = load_config(args.config, [*train_overrides(args), f"progress={args.progress}"])
        return str(train(config))
    if args.action == "evaluate":
        return str(evaluate_segmentation(ScoreConfig(
            checkpoint=args.checkpoint, images=args.images, masks=args.masks, split=args.split, out=args.out,
            threshold=args.threshold, ignore_empty=args.ignore_empty, device=args.device, progress=args.progress,
            overwrite=args.overwrite, command=f"{PROG} {shlex.join(args.argv)}")))
    return predict_masks(PredictConfig(checkpoint=args.checkpoint, images=args.images, out=args.out, split=args.split,
                                       threshold=args.threshold, tile=args.tile, overlap=args.overlap,
                                       device=args.device, progress=args.progress, overwrite=args.overwrite))


def main(argv: list[str] | None = None) -> None:
    cli.main("segment", build_parser, run, argv)


if __name__ == "__main__":
    main()

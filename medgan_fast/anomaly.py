"""`python -m medgan_fast.anomaly split|train-encoder|reconstruct|score`: f-AnoGAN anomaly detection on a StyleGAN2.

Thin: ``split`` calls :mod:`medgan_fast.jobs.anomaly_split`; ``train-encoder`` turns its arguments into the overrides of a ``train`` run with arch
Encoder (:mod:`medgan_fast.training.encoder`: the izi_f encoder, G and D frozen) and calls
the one training loop; ``reconstruct`` calls :mod:`medgan_fast.jobs.anomaly` and ``score``
:mod:`medgan_fast.jobs.anomaly_score`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import cli
from .jobs.anomaly import ReconstructConfig, reconstruct_folder
from .jobs.anomaly_score import ScoreConfig, score
from .jobs.anomaly_split import SplitConfig, split_labelled
from .metrics.anomaly import DISTANCES
from .metrics.detection import THRESHOLD_RULES
from .training import load_config, train
from .training.checkpoint import load_checkpoint
from .training.config import saved_config

PROG = "python -m medgan_fast.anomaly"

EPILOG = f"""\
examples:
  {PROG} split --data ../shared/data/isic_uda1_derm/images --labels ../shared/data/isic_uda1_derm/labels.csv \
      --label-column diagnosis --normal nevus --anomaly melanoma --holdout 0.3 --out isic_split
      isic_split/train/ (70% of the nevi, to train G and E on), heldout.csv (the other nevi and every
      melanoma, for score --labels) and split.csv
  python -m medgan_fast.train --set arch=StyleGAN2 --set image_size=64 --set batch_size=8 --set num_epochs=4 \\
      --set sample_crops=128 --set channel_base=2048 --set learning_rate=0.0025 --set beta_adam=0 \\
      --set run=stylegan2_sample
      makes a StyleGAN2 first: runs/stylegan2_sample/checkpoints/last.pt
  {PROG} train-encoder --checkpoint runs/stylegan2_sample/checkpoints/last.pt --epochs 4
      an izi_f encoder for it on the same images (the embedded sample); writes runs/encoder_sample/
  {PROG} train-encoder --checkpoint G.pt --data nevi/ --epochs 50 --kappa 1.0 --run encoder_nevi
      on a folder of normal images only (here nevi), resized and centre-cropped to G's size
  {PROG} reconstruct --encoder runs/encoder_sample/checkpoints/last.pt --data images/ --out rebuilt/
      G(E(x)) of every image as rebuilt/<name>.png, and rebuilt/grid.png (images above them)
  {PROG} score --encoder E.pt --data ../shared/data/isic_uda1_derm/images \
      --labels ../shared/data/isic_uda1_derm/labels.csv --label-column diagnosis --anomaly melanoma --out scored/
      scores.csv, report.json (test ROC AUC with its 95% interval; threshold chosen on the
      validation part), roc.png, confusion.png, violin.png, tsne.png; score images the
      encoder and G did not train on

train-encoder writes <out>/<run>/: config.yaml, log.jsonl (loss = izi_f, pixel_mse), loss.png,
samples/reconstructions_epoch_NNNN.png (fixed images above G(E(x))) and checkpoints/. It is
`python -m medgan_fast.train --set arch=Encoder ...`: --set takes every train key.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="f-AnoGAN anomaly detection: train the izi_f encoder, "
                                                            "reconstruct images, score them.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="action", metavar="split|train-encoder|reconstruct|score")
    part = commands.add_parser("split", help="normal images to train on, and the labelled rest to score",
                               epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    part.add_argument("--data", type=Path, required=True, help="the folder of every labelled image")
    part.add_argument("--labels", type=Path, required=True,
                      help="CSV with an id column (file, image, isic_id or id) and --label-column")
    part.add_argument("--label-column", default="label", help="default label")
    part.add_argument("--normal", default="0", help="the label value of the normal class (default 0)")
    part.add_argument("--anomaly", default="1", help="the label value of the anomalous class (default 1)")
    part.add_argument("--holdout", type=float, default=0.3,
                      help="part of the normal images held out for scoring (default 0.3)")
    part.add_argument("--seed", type=int, default=0, help="default 0")
    part.add_argument("--out", type=Path, required=True, help="a new folder")
    fit = commands.add_parser("train-encoder", help="train an izi_f encoder for a StyleGAN2 checkpoint",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    fit.add_argument("--checkpoint", type=Path, help="a checkpoint of an arch StyleGAN2 run (G and D stay frozen)")
    fit.add_argument("--data", help="folder or .h5 of normal images (default: the embedded sample)")
    fit.add_argument("--epochs", type=int, default=20, help="default 20")
    fit.add_argument("--batch-size", type=int, default=8, help="default 8")
    fit.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 0.001)")
    fit.add_argument("--kappa", type=float, default=1.0, help="weight of the discriminator-feature residual "
                                                              "(default 1.0)")
    fit.add_argument("--out", default="runs", help="runs go to OUT/RUN/ (default runs)")
    fit.add_argument("--run", help="run name (default encoder_sample, or encoder<image size>)")
    fit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any train key")
    rebuild = commands.add_parser("reconstruct", help="write G(E(x)) for every image of a folder",
                                  epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    rebuild.add_argument("--encoder", type=Path, required=True, help="checkpoints/last.pt of a train-encoder run")
    rebuild.add_argument("--data", type=Path, required=True, help="a folder of images (PNG, JPEG, TIFF, NPY)")
    rebuild.add_argument("--out", type=Path, required=True, help="folder for the reconstructions (PNG)")
    rebuild.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    rebuild.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    rebuild.add_argument("--overwrite", action="store_true", help="replace the PNG files already in --out")
    rate = commands.add_parser("score", help="anomaly scores of labelled images, ROC AUC, F1 and plots",
                               epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    rate.add_argument("--encoder", type=Path, required=True, help="checkpoints/last.pt of a train-encoder run")
    rate.add_argument("--data", type=Path, required=True, help="a folder of images")
    rate.add_argument("--labels", type=Path, required=True,
                      help="CSV: an id column (file, image, isic_id or id; else the first) and --label-column")
    rate.add_argument("--label-column", default="label", help="default label")
    rate.add_argument("--anomaly", default="1", help="the label value of the anomalous class (default 1)")
    rate.add_argument("--out", type=Path, required=True, help="a new folder for the report")
    rate.add_argument("--distance", default="izif", choices=DISTANCES, help="default izif")
    rate.add_argument("--kappa", type=float, help="izi_f's feature weight (default: the encoder's)")
    rate.add_argument("--val-fraction", type=float, default=0.3,
                      help="part of each class for choosing the threshold (default 0.3)")
    rate.add_argument("--threshold-rule", default="youden", choices=THRESHOLD_RULES, help="default youden")
    rate.add_argument("--seed", type=int, default=0, help="the split's and the bootstrap's seed (default 0)")
    rate.add_argument("--batch-size", type=int, default=16)
    rate.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    rate.add_argument("--overwrite", action="store_true", help="write into an --out that already holds files")
    return parser


def train_overrides(args: argparse.Namespace) -> list[str]:
    """The train --set overrides of `anomaly train-encoder`: the generator's size and channels
    come from its checkpoint's config (the task loads and checks its networks)."""
    gan = saved_config(load_checkpoint(args.checkpoint)["config"])
    settings = {"arch": "Encoder", "generator_checkpoint": args.checkpoint, "kappa": args.kappa,
                "image_size": gan.image_size, "number_channels": gan.number_channels, "num_epochs": args.epochs,
                "batch_size": args.batch_size, "learning_rate": args.lr, "beta_adam": 0.9, "out": args.out,
                "run": args.run or ("encoder_sample" if args.data is None else f"encoder{gan.image_size}"),
                "data": args.data or "sample", "metrics": "", "loader_workers": 0}
    return [f"{key}={value}" for key, value in settings.items()] + list(args.set)


def run(args: argparse.Namespace) -> str:
    if args.action is None:
        raise cli.UsageError("give an action: split, train-encoder, reconstruct or score (e.g. python -m medgan_fast.anomaly "
                             "train-encoder --checkpoint runs/stylegan2_sample/checkpoints/last.pt)")
    if args.action == "split":
        return str(split_labelled(SplitConfig(args.data, args.labels, args.out, args.label_column, args.normal,
                                              args.anomaly, args.holdout, args.seed, args.progress)))
    if args.action == "score":
        return str(score(ScoreConfig(args.encoder, args.data, args.labels, args.out, args.distance, args.kappa,
                                     args.label_column, args.anomaly, args.val_fraction, args.threshold_rule,
                                     seed=args.seed, batch_size=args.batch_size, device=args.device,
                                     progress=args.progress, overwrite=args.overwrite)))
    if args.action == "reconstruct":
        return str(reconstruct_folder(ReconstructConfig(args.encoder, args.data, args.out, args.batch_size, args.device,
                                                 args.progress, args.overwrite)))
    if args.checkpoint is None:
        raise cli.UsageError("--checkpoint FILE is required: a checkpoint of a StyleGAN2 run (python -m "
                             "medgan_fast.train --set arch=StyleGAN2 ... makes one; see --help)")
    config = load_config(None, [*train_overrides(args), f"progress={args.progress}"])
    return str(train(config))


def main(argv: list[str] | None = None) -> None:
    cli.main("anomaly", build_parser, run, argv)


if __name__ == "__main__":
    main()

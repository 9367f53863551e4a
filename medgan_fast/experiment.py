"""`python -m medgan_fast.experiment augmentation|mask2image`: experiments that answer a question.

- augmentation: does GAN augmentation help segmentation? (:mod:`medgan_fast.jobs.experiment`)
- mask2image: which mask -> image generator, and do its images respect their masks?
  (:mod:`medgan_fast.jobs.mask2image_comparison`)

Thin: --config FILE.yaml + --set key=value -> the experiment's config -> its job.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

from . import cli
from .jobs.experiment import ARMS, load_experiment, run_experiment
from .jobs.mask2image_comparison import compare_generators, load_comparison

PROG = "python -m medgan_fast.experiment"
EMPS = "../shared/data/emps"

EPILOG = f"""\
examples, augmentation (EMPS, the official split; about an hour on a 2-core CPU):
  {PROG} augmentation --config configs/augmentation_emps.yaml
  {PROG} augmentation --config configs/augmentation_emps.yaml --set seeds=[0] --set fractions=[0.1,1.0] \\
      --set unet.steps=200 --set work=runs/quick --set out=quick
      a smaller trial
  {PROG} augmentation --config configs/augmentation_emps.yaml --shard 1/3   (and 2/3, 3/3, in parallel)
  {PROG} augmentation --config configs/augmentation_emps.yaml --merge
      three processes (array jobs, GPUs) share the cells; --merge then writes the report

For each fraction of the real training images (subsets nested, drawn by seed) and each seed,
a U-Net is trained in the arms {', '.join(ARMS)} (real + classical augmentation, real + GAN
pairs, both) and scored on the test split; the GAN pairs of a cell come from a mask GAN and a
Mask2Image GAN trained on that cell's subset only. Runs go to the config's `work` folder
(run the same command again to continue a stopped experiment); the report to its `out`:
results.md (Dice, IoU and accuracy per arm and fraction; Wilcoxon signed-rank tests of GAN
pairs against real only and against classical augmentation), results.json,
dice_vs_fraction.png and config.yaml.

mask2image: one Mask2Image GAN per generator (unet, spade) and a U-Net judge, all on one
(image, mask) patch set, scored on patches of held-out images: PSNR, SSIM, SWD, the SSIM
between two noise draws of a mask, and mask fidelity (the U-Net's Dice on generated images
against their masks, beside its Dice on real ones):
  python -m medgan_fast.patches --images {EMPS}/images --masks {EMPS}/segmaps --instances \\
      --split {EMPS}/train.csv --mode full --size 64 --out runs/data/emps_full64_train.h5
  python -m medgan_fast.patches --images {EMPS}/images --masks {EMPS}/segmaps --instances \\
      --split {EMPS}/test.csv --mode full --size 64 --out runs/data/emps_full64_test.h5
  {PROG} mask2image --config configs/mask2image_emps.yaml

augmentation keys: images, masks, train_split, test_split, out, work, image_size, number_channels,
fractions, seeds, arms, synthetic_ratio, threshold, real_areas, device, and the sections unet,
mask_gan, image_gan (train keys of arch UNet, DCGAN/SNGAN and Mask2Image, plus `steps`:
optimiser steps, whatever the subset's size); --set unet.steps=300 sets a section's key.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Experiments that answer a question.", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", nargs="?", choices=("augmentation", "mask2image"),
                        help="augmentation: does GAN augmentation help a U-Net segment? mask2image: which mask -> "
                             "image generator is better, and do its images respect their masks?")
    parser.add_argument("--config", type=Path,
                        help="the experiment's YAML file (configs/augmentation_emps.yaml, configs/mask2image_emps.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key (unet.steps=300 for a section's key)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the report in out, and start over a work folder of another config")
    parser.add_argument("--shard", metavar="K/N", help="augmentation: run only every N-th cell, from the K-th "
                                                      "(1 <= K <= N), e.g. one array job or GPU; shards share work")
    parser.add_argument("--merge", action="store_true",
                        help="augmentation: train nothing; write the report once every shard's cells are done")
    return parser


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """"K/N" -> (K, N), 1 <= K <= N."""
    if text is None:
        return None
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise cli.UsageError(f"--shard: expected K/N with 1 <= K <= N, e.g. 1/4, got {text!r}")
    return int(match[1]), int(match[2])


def run(args: argparse.Namespace) -> str:
    if args.experiment is None or args.config is None:
        raise cli.UsageError("give the experiment and its config, e.g. python -m medgan_fast.experiment augmentation "
                             "--config configs/augmentation_emps.yaml")
    command = f"{PROG} {shlex.join(args.argv)}"
    shard = parse_shard(args.shard)
    if args.experiment == "mask2image" and (shard or args.merge):
        raise cli.UsageError("--shard and --merge are for the augmentation experiment")
    if shard and args.merge:
        raise cli.UsageError("--merge runs no cell; give it without --shard, after every shard finished")
    if args.experiment == "mask2image":
        config = load_comparison(args.config, args.set)
        result = compare_generators(config, progress=args.progress, overwrite=args.overwrite, command=command)
        lines = [f"{name}: " + ", ".join(f"{key} {value:.4g}" for key, value in scores.items())
                 for name, scores in result["scores"].items()]
        return "\n".join([*lines, f"better: {result['better']}", f"wrote {config.out}/results.md, results.json, "
                           "pairs_*.png, noise_*.png, config.yaml"])
    config = load_experiment(args.config, args.set)
    result = run_experiment(config, progress=args.progress, overwrite=args.overwrite, command=command,
                            shard=shard, merge=args.merge)
    if not result.get("complete", True):
        return (f"ran {result['ran']} cell(s){f' of shard {args.shard}' if shard else ''}; {result['done']} of "
                f"{result['cells']} cells are done. The report is written when every cell is: run the other shards, "
                f"then {PROG} augmentation --config {args.config} --merge")
    lines = [f"{len(result['cells'])} cells, {result['seconds'] / 60:.1f} min in all; test Dice (mean over seeds):"]
    for arm, fractions in result["summary"].items():
        lines.append(f"  {arm:<14}" + "  ".join(f"{key}: {value['dice']['mean']:.4f}" for key, value in
                                                  fractions.items()))
    lines += [f"  {t['a']} vs {t['b']} ({t['fraction']}): {t['verdict']}" for t in result["tests"]
              if t["fraction"] == "all"]
    lines.append(f"wrote {config.out}/results.md, results.json, dice_vs_fraction.png, config.yaml")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    cli.main("experiment", build_parser, run, argv)


if __name__ == "__main__":
    main()

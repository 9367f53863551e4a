"""`python -m medgan_fast.train`: train a GAN (DCGAN, SNGAN) from a YAML config; one GPU, CPU or torchrun.

Thin: --config FILE.yaml + --set key=value -> :class:`~medgan_fast.training.config.TrainConfig`
-> :func:`~medgan_fast.training.loop.train` (or, for the users' arch 'Generator',
:func:`~medgan_fast.jobs.generation.generate`) -> where the outputs are.
"""

from __future__ import annotations

import argparse
import shlex
import textwrap

from . import cli
from .training.config import SAMPLE_PRESET, describe_arch_keys, describe_keys, load_config
from .jobs.generation import GenerateConfig, generate
from .training.loop import train
from .training.registry import ARCHITECTURES

PROG = "python -m medgan_fast.train"



def _keys(lines: list[str]) -> str:
    return "\n".join(textwrap.fill(line, 94, initial_indent="  ", subsequent_indent="      ") for line in lines)


KEYS = _keys(describe_keys()) + "".join(f"\n\nkeys of arch {arch}, besides the ones above:\n{_keys(lines)}"
                                        for arch, lines in describe_arch_keys().items())

EPILOG = f"""\
examples:
  {PROG}
      a DCGAN-64 on the embedded sample (random crops of scikit-image's immunohistochemistry
      image), a few minutes on a laptop CPU; writes runs/{SAMPLE_PRESET['run']}/
  {PROG} --config configs/users_dcgan64.yaml
      a control file in our users' format (arch, path, out, run, ..., dis_feature_maps)
  {PROG} --config configs/sngan128.yaml --set num_epochs=50 --set loss=hinge
  {PROG} --set data=patches.h5 --set image_size=64 --set number_channels=3 --set run=nuclei
      train on the patch set that `python -m medgan_fast.patches` writes
  {PROG} --config configs/cyclegan_anhir.yaml
      CycleGAN from H&E to IHC tiles (unpaired); then python -m medgan_fast.translate
  {PROG} --config configs/sngan128.yaml --set resume=true
      continue the run in <out>/<run>/ from checkpoints/last.pt (exactly where it stopped)
  torchrun --nproc_per_node=4 -m medgan_fast.train --config configs/sngan128.yaml
      DistributedDataParallel on 4 GPUs (gloo on CPU); batch_size is per process
  {PROG} --set arch=Generator --set path=runs/{SAMPLE_PRESET['run']}/checkpoints/last.pt --set quantity=100 \\
      --set out=fakes
      the users' generation job (same as python -m medgan_fast.generate)

outputs in <out>/<run>/: config.yaml (resolved), log.jsonl, checkpoints/last.pt and
step_NNNNNNNN.pt, samples/epoch_NNNN.png, loss.png, evolution.gif, and with each sample grid
its image metrics against a fixed batch of real images (key metrics, default
ssim,ms_gmsd,haarpsi,swd; metrics= for none): log.jsonl records, metrics.png, metrics.json.

keys (--config FILE.yaml or --set key=value; values read as YAML: true, 0.9, null):
{KEYS}
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a DCGAN or SNGAN (or a U-Net, or a mask -> image GAN: arch UNet, Mask2Image) on an "
                    "image folder, an HDF5 patch set or the embedded sample, with "
                    "checkpoints, exact resume, sample grids and logs. With no arguments, trains on the "
                    "embedded sample.")
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of key: value settings (our users' "
                                                               "control files work unchanged)")
    parser.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", default=[],
                        help="override one setting (repeatable), e.g. --set num_epochs=5")
    return parser


def run(args: argparse.Namespace) -> str | None:
    """Trains (or generates, for arch 'Generator'); the summary and what to do next."""
    overrides = [*args.overrides, *([] if args.progress else ["progress=false"])]
    config = load_config(args.config, overrides)
    command = f"{PROG} {shlex.join(args.argv)}".rstrip()
    if config.is_generate:
        return str(generate(GenerateConfig.from_train_config(config, command)))
    summary = train(config)
    if summary.rank != 0:   # the other processes of a torchrun group stay quiet
        return None
    if ARCHITECTURES[config.arch].generator is None:   # UNet, Mask2Image: generate does not take them
        return str(summary)
    return (f"{summary}\nnext: python -m medgan_fast.generate --checkpoint {summary.checkpoint} --quantity 64 "
            "--out generated")


def main(argv: list[str] | None = None) -> None:
    cli.main("train", build_parser, run, argv)


if __name__ == "__main__":
    main()

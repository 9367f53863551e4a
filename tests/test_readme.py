"""The README's command examples run as written, in order, in a fresh folder beside
../shared (as a checkout has it), so they cannot drift from the commands.

Training examples (train, segment train) get README_SHRINK appended (the README states it): the same runs, one
epoch on a few images of smaller models; experiments get EXPERIMENT_SHRINK (one seed, a few steps). Setup lines (venv, pip, pytest) are not commands of
ours and are left to CI, which runs them in a fresh clone.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# Also in the README ("Every example above ... runs in tests/test_readme.py ..."); a test below
# checks the README says exactly this.
README_SHRINK = ("--set num_epochs=1 --set max_images=16 --set batch_size=8 --set gen_feature_maps=8 "
                 "--set dis_feature_maps=8 --set sample_count=4")
# The same for the experiments: one seed, the full set, one epoch of 16 items for each network.
EXPERIMENT_SHRINK = {
    "augmentation": "--set seeds=[0] --set fractions=[1.0] --set arms=[real,gan] --set unet.max_images=16 "
                    "--set mask_gan.max_images=16 --set image_gan.max_images=16 --set unet.steps=2 "
                    "--set mask_gan.steps=2 --set image_gan.steps=2",
    "mask2image": "--set image_gan.max_images=16 --set unet.max_images=16 --set image_gan.steps=2 "
                  "--set unet.steps=2",
}


def readme_commands(text: str) -> list[str]:
    """The commands of the README's bash blocks from "Set up" up to "## Ops", in order:
    continuation lines joined, comments dropped, setup lines (venv, pip, pytest) left out."""
    section = text[text.index("## Set up"):text.index("## Ops")]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] in (["python"], ["torchrun"]) and any(word.startswith("medgan_fast") for word in words):
                commands.append(shlex.join(words))
    return commands


def argv(command: str) -> list[str]:
    words = shlex.split(command)
    module = words[words.index("-m") + 1]
    if words[0] == "torchrun":
        words = [sys.executable, "-m", "torch.distributed.run", *words[1:]]
    else:
        words = [sys.executable, *words[1:]]
    if module == "medgan_fast.train" or (module == "medgan_fast.segment" and words[words.index("-m") + 2] == "train"):
        words += shlex.split(README_SHRINK)
    if module == "medgan_fast.experiment":
        words += shlex.split(EXPERIMENT_SHRINK[words[words.index("-m") + 2]])
    return words


def test_the_readme_states_the_shrink_and_the_examples_are_ours():
    text = (REPO / "README.md").read_text()
    assert f"`{README_SHRINK}`" in " ".join(text.split())
    assert all(f"`{shrink}`" in " ".join(text.split()) for shrink in EXPERIMENT_SHRINK.values())
    commands = readme_commands(text)
    assert commands[0] == "python -m medgan_fast.train"   # the main job
    assert len(commands) >= 15 and sum(command.startswith("torchrun") for command in commands) == 1


@pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="needs ../shared/data beside the checkout")
def test_readme_examples_run_as_written_in_order(tmp_path):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "configs").symlink_to(REPO / "configs")
    (tmp_path / "shared").symlink_to(SHARED)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for command in readme_commands((REPO / "README.md").read_text()):
        result = subprocess.run(argv(command), cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{command}\nexit {result.returncode}\n{result.stderr[-3000:]}"

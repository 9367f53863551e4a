"""arch StyleGAN2: a killed run resumes to the same weights, EMA, optimizer states, ADA
probability and path-length mean as an uninterrupted one; ADA's augmentations and its
controller; generate samples the EMA generator; bad settings are refused by name."""

from __future__ import annotations

import h5py
import pytest
import torch

from medgan_fast.errors import Interrupted
from medgan_fast.jobs.generation import GenerateConfig, generate, load_generator
from medgan_fast.training.ada import AdaptiveProbability, augment
from medgan_fast.training.checkpoint import load_checkpoint
from medgan_fast.training.config import ConfigError
from medgan_fast.training.loop import train
from medgan_fast.training.registry import Context
from medgan_fast.training.stylegan2 import StyleGAN2Task

from .conftest import tiny_config

# ~60k parameters per network; 4 steps an epoch; every lazy term and ADA update runs often.
TINY_STYLEGAN2 = dict(arch="StyleGAN2", image_size=64, sample_crops=16, num_epochs=2, checkpoint_every=1,
                      metrics="", learning_rate=0.0025, beta_adam=0.0,
                      options=dict(channel_base=256, channel_max=32, z_dim=16, w_dim=16, mapping_layers=2,
                                   r1_interval=2, pl_interval=2, ada_interval=1, ada_kimg=0.02, augment_p=0.3))


def config(out, **changes):
    return tiny_config(out, **{**TINY_STYLEGAN2, **changes})


def test_an_interrupted_run_resumes_exactly(tmp_path, monkeypatch):
    whole = load_checkpoint(train(config(tmp_path / "whole")).checkpoint)
    assert whole["extra"]["ada"]["p"] != 0.3   # ADA moved p
    assert float(whole["extra"]["pl_mean"]) > 0

    original = StyleGAN2Task.train_step

    def stop_at_step_5(self, batch, step):
        if step == 5:
            raise KeyboardInterrupt
        return original(self, batch, step)

    monkeypatch.setattr(StyleGAN2Task, "train_step", stop_at_step_5)
    with pytest.raises(Interrupted):
        train(config(tmp_path / "split"))
    monkeypatch.setattr(StyleGAN2Task, "train_step", original)
    resumed = train(config(tmp_path / "split", resume=True))
    assert resumed.resumed_from == 5
    split = load_checkpoint(resumed.checkpoint)
    for name in ("generator", "discriminator", "generator_ema"):
        for key, value in whole["models"][name].items():
            assert torch.equal(value, split["models"][name][key]), (name, key)
    for name in ("generator", "discriminator"):
        for index, state in whole["optimizers"][name]["state"].items():
            assert torch.equal(state["exp_avg_sq"], split["optimizers"][name]["state"][index]["exp_avg_sq"])
    assert whole["extra"]["ada"] == split["extra"]["ada"]
    assert torch.equal(whole["extra"]["pl_mean"], split["extra"]["pl_mean"])


def test_an_epoch_whose_last_batch_is_partial_drops_it(tmp_path):
    # 10 images in batches of 4: minibatch std (group 4) would fail on the last 2
    result = train(config(tmp_path, sample_crops=10, num_epochs=1))
    assert load_checkpoint(result.checkpoint)["step"] == 2


def test_generate_samples_the_ema_generator_with_its_z_size(tmp_path):
    checkpoint = train(config(tmp_path, num_epochs=1)).checkpoint
    generator, info = load_generator(checkpoint)
    assert info["arch"] == "StyleGAN2" and generator.z_dim == 16
    ema = load_checkpoint(checkpoint)["models"]["generator_ema"]
    for key, value in generator.state_dict().items():
        assert torch.equal(value, ema[key]), key
    assert generator(torch.randn(2, 16), noise_mode="const").shape == (2, 3, 64, 64)
    # with its fixed noise maps: the same seed gives the same images, whatever the batch size;
    # truncation psi 0 puts every w at w_avg, so every image is the same one
    for name, batch, psi in (("a.h5", 4, None), ("b.h5", 1, None), ("psi0.h5", 4, 0.0)):
        generate(GenerateConfig(checkpoint, quantity=3, out=tmp_path / name, batch_size=batch, truncation_psi=psi,
                                progress=False))
    a, b, psi0 = (h5py.File(tmp_path / name)["images"][:].astype(int) for name in ("a.h5", "b.h5", "psi0.h5"))
    assert (a == b).all() and (a[0] != a[1]).any()
    assert (psi0[0] == psi0[1]).all() and (psi0[0] == psi0[2]).all()


def test_truncation_psi_is_refused_for_a_dcgan(trained_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="truncation_psi: a DCGAN generator has no w-space"):
        generate(GenerateConfig(trained_checkpoint, quantity=2, out=tmp_path / "x", truncation_psi=0.5, progress=False))


@pytest.mark.parametrize("changes, message", [
    ({"image_size": 32}, "image_size: expected one of 64, 128, 256"),
    ({"batch_size": 6}, "must be a multiple of mbstd_group"),
    ({"options": {**TINY_STYLEGAN2["options"], "style_mixing": 1.5}}, "style_mixing: expected a number in"),
    ({"options": {**TINY_STYLEGAN2["options"], "r1_gamma": -2}}, "r1_gamma: expected >= 0 or -1"),
    ({"options": {**TINY_STYLEGAN2["options"], "augment": "adaptive"}}, "augment: expected one of"),
])
def test_bad_settings_are_refused_by_name(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        train(config(tmp_path, **changes))


def test_augment_is_identity_at_p0_and_differentiable():
    x = torch.rand(8, 3, 16, 16, requires_grad=True) * 2 - 1
    assert augment(x, 0.0) is x
    g = torch.Generator().manual_seed(0)
    y = augment(x, 1.0, g)
    assert y.shape == x.shape and not torch.allclose(y, x)
    (grad,) = torch.autograd.grad(y.square().sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # a pure x-flip and translation keep the pixel values: with colour at p=0 only geometry moves them
    few = augment(x.detach()[:1, :1], 1.0, torch.Generator().manual_seed(1))
    assert few.shape == (1, 1, 16, 16)


def test_ada_raises_p_when_d_overfits_and_lowers_it_otherwise():
    ada = AdaptiveProbability(0.5, target=0.6, kimg=1.0, interval=2)
    for step in range(2):
        ada.observe(torch.ones(8))   # every real judged real: r_t = 1 > 0.6
        ada.update(step, batch_size=8)
    assert ada.rt == 1.0 and ada.p == pytest.approx(0.5 + 8 * 2 / 1000)
    for step in range(2, 4):
        ada.observe(-torch.ones(8))
        ada.update(step, batch_size=8)
    assert ada.p == pytest.approx(0.5)
    fixed = AdaptiveProbability(0.2, adaptive=False)
    fixed.observe(torch.ones(8))
    fixed.update(3, 8)
    assert fixed.p == 0.2


# ---------------------------------------------------------------------------------------
# Several processes: no DDP wrapper (R1 and path length differentiate twice); rank 0's
# weights to all, gradients averaged per phase, ADA's sums, pl_mean and w_avg reduced.

DDP_WORKER = """
import json, sys
import torch
from medgan_fast.training.config import TrainConfig
from medgan_fast.training.distributed import setup
from medgan_fast.training.registry import Context
from medgan_fast.training.stylegan2 import StyleGAN2Task

torch.set_num_threads(1)
settings, out = json.loads(sys.argv[1]), sys.argv[2]
dist = setup(0)
torch.manual_seed(dist.rank)                     # each process its own noise, as the loop seeds it
task = StyleGAN2Task(Context(TrainConfig(**settings), dist))
shard = torch.Generator().manual_seed(100 + dist.rank)
for step in range(4):
    task.train_step(torch.rand(4, 3, 64, 64, generator=shard) * 2 - 1, step)
state = {name: model.state_dict() for name, model in task.models.items()}
torch.save({"models": state, "ada": task.ada.state_dict(), "pl_mean": task.pl_mean}, f"{out}/rank{dist.rank}.pt")
dist.close()
"""


def test_two_processes_keep_one_state(tmp_path):
    import json

    from .conftest import run_module

    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    settings = {**config(tmp_path).to_dict(), "n_gpu": 0}
    result = run_module("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
                        json.dumps(settings), str(tmp_path), cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for name, state in ranks[0]["models"].items():
        for key, value in state.items():
            assert torch.equal(value, ranks[1]["models"][name][key]), (name, key)
    assert ranks[0]["ada"] == ranks[1]["ada"] and ranks[0]["ada"]["p"] != 0.3
    assert torch.equal(ranks[0]["pl_mean"], ranks[1]["pl_mean"]) and float(ranks[0]["pl_mean"]) > 0
    start = StyleGAN2Task(Context(config(tmp_path))).models["generator"].state_dict()
    moved = ranks[0]["models"]["generator"]
    assert any(not torch.equal(start[key], moved[key]) for key in start if key.endswith("weight"))


def test_torchrun_trains_stylegan2_in_two_processes(tmp_path):
    from .conftest import run_module, tiny_overrides

    common = {key: value for key, value in TINY_STYLEGAN2.items() if key != "options"}
    overrides = tiny_overrides(tmp_path, **common, **TINY_STYLEGAN2["options"])
    result = run_module("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                        "medgan_fast.train", *overrides, cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = load_checkpoint(tmp_path / "tiny" / "checkpoints" / "last.pt")
    assert checkpoint["world_size"] == 2 and checkpoint["step"] == 4   # 16 images, 2 processes of 4 a step

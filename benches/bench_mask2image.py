"""Mask2Image training, one step on a batch of 8 grey 64 px (mask, image) pairs, data
included: ours (the Mask2Image task's step through the framework's loader: (epoch, index)
keys, channels_last; bf16 autocast on a GPU) against the pix2pix-style loop users write
around the same networks (a TensorDataset of the same tensors, DataLoader(shuffle=True),
NCHW; D on the real and the detached fake pair, BCE with logits; G through D again, + 10 L1;
Adam 2e-4, betas (0.5, 0.999)). The same loss on both sides: ours with feature matching and
the diversity term off (each would cost either side the same extra work).

Also the augment job: 64 synthetic pairs (mask GAN -> masks -> Mask2Image -> patch set with
its contact sheet) against the loop users write (the same two networks, the masks and
images collected in lists and written to HDF5 once, no compression, no sheet).

images (pairs) per second = batch / time, so report.py's ratio (the users' time / ours) is
also the throughput ratio.
"""

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from _inputs import bench_interleaved, needs_cuda, synchronised, task_steps

from medgan_fast.data.patchset import PatchSetWriter, make_meta
from medgan_fast.data.segmentation import PatchPairDataset
from medgan_fast.jobs.augmentation import AugmentConfig, load_image_gan, synthesize_pairs
from medgan_fast.jobs.generation import latent_vectors, load_generator, to_uint8
from medgan_fast.models.mask2image import MultiScalePatchDiscriminator, NoiseUNetGenerator
from medgan_fast.training import load_config, train
from medgan_fast.training.config import TrainConfig
from medgan_fast.training.data import build_loader
from medgan_fast.training.distributed import Distributed
from medgan_fast.training.mask2image import Mask2ImageTask
from medgan_fast.training.registry import Context

BATCH, SIZE, COUNT, WIDTH, DEPTH = 8, 64, 64, 16, 4
PAIRS = 64


def patch_set(path):
    """COUNT (image, mask) pairs of bright disks on noise, written as a patch set."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    masks = np.zeros((COUNT, 1, SIZE, SIZE), bool)
    for k in range(COUNT):
        cy, cx, r = rng.integers(16, 48, 2).tolist() + [int(rng.integers(6, 14))]
        masks[k, 0] = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    images = np.clip(rng.normal(80, 25, masks.shape) + 110 * masks, 0, 255).astype(np.uint8)
    with PatchSetWriter(path, SIZE) as writer:
        writer.append(images, masks, make_meta(COUNT, "bench", -1, np.arange(COUNT), 0, 1, 0))
    return path


def ours(device, path):
    config = TrainConfig(arch="Mask2Image", image_size=SIZE, number_channels=1, batch_size=BATCH, seed=0,
                         n_gpu=int(device.type == "cuda"), loader_workers=0, data=str(path), gen_feature_maps=WIDTH,
                         dis_feature_maps=WIDTH, options={"augment": "none", "gen_depth": DEPTH, "val_fraction": 0,
                                                          "feature_matching_weight": 0, "diversity_weight": 0})
    task = Mask2ImageTask(Context(config, Distributed(device=device)))
    dataset, _ = Mask2ImageTask.datasets(config)
    loader, sampler, _ = build_loader(dataset, config)
    return task_steps(task, loader, sampler)


def users(device, path):
    """The pix2pix loop: tensors in a TensorDataset, a shuffling DataLoader, NCHW."""
    dataset = PatchPairDataset(path, image_size=SIZE, channels=1)
    pairs = [dataset.pair(i) for i in range(len(dataset))]
    tensors = torch.utils.data.TensorDataset(torch.stack([image for image, _ in pairs]),
                                             torch.stack([mask for _, mask in pairs]))
    loader = torch.utils.data.DataLoader(tensors, batch_size=BATCH, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    generator = NoiseUNetGenerator(1, WIDTH, DEPTH).to(device)
    discriminator = MultiScalePatchDiscriminator(1, WIDTH, 2).to(device)
    opt_g = torch.optim.Adam(generator.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), 2e-4, betas=(0.5, 0.999))
    state = {"batches": iter(())}

    def adversarial(outputs, target):
        return sum(F.binary_cross_entropy_with_logits(o[-1], torch.full_like(o[-1], target))
                   for o in outputs) / len(outputs)

    def step():
        batch = next(state["batches"], None)
        if batch is None:
            state["batches"] = iter(loader)
            batch = next(state["batches"])
        real, mask = (tensor.to(device) for tensor in batch)
        mask = mask * 2 - 1
        fake = generator(mask)
        loss_d = (adversarial(discriminator(mask, real), 1.0) + adversarial(discriminator(mask, fake.detach()), 0.0))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = adversarial(discriminator(mask, fake), 1.0) + 10 * (fake - real).abs().mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()

    return step


def steps_on(device, tmp_path):
    path = patch_set(tmp_path / "pairs.h5")
    device = torch.device(device)
    return {"medgan_fast": ours(device, path), "users_reference": users(device, path)}


def test_mask2image_training_cpu(benchmark, tmp_path):
    bench_interleaved(benchmark, f"Mask2Image training step, batch {BATCH} x 1 x {SIZE} x {SIZE}, CPU",
                      steps_on("cpu", tmp_path), rounds=12, warmup=2)


@needs_cuda
def test_mask2image_training_cuda(benchmark, tmp_path):
    steps = {name: synchronised(step) for name, step in steps_on("cuda", tmp_path).items()}
    bench_interleaved(benchmark, f"Mask2Image training step, batch {BATCH} x 1 x {SIZE} x {SIZE}, GPU", steps,
                      rounds=50)


def stages(tmp_path, device):
    """(mask GAN, image GAN) checkpoints of the widths above, trained one step (the weights'
    values do not change the time)."""
    path = patch_set(tmp_path / "pairs.h5")
    common = ["number_channels=1", "image_size=64", f"gen_feature_maps={WIDTH}", f"dis_feature_maps={WIDTH}",
              "num_epochs=1", "max_images=8", "batch_size=8", "loader_workers=0", "metrics=", "progress=false",
              f"n_gpu={int(device == 'cuda')}", f"out={tmp_path}", "checkpoint_every=0", "latent_vector=64"]
    mask_gan = train(load_config(None, [*common, f"data={path}", "run=masks"])).checkpoint
    image_gan = train(load_config(None, [*common, "arch=Mask2Image", f"data={path}", "run=images", "val_fraction=0",
                                         f"gen_depth={DEPTH}"])).checkpoint
    return mask_gan, image_gan


def augment_entries(tmp_path, device):
    mask_gan, image_gan = stages(tmp_path, device)
    counter = iter(range(10**6))

    def ours():
        out = tmp_path / f"ours_{next(counter)}.h5"
        synthesize_pairs(AugmentConfig(mask_gan, image_gan, quantity=PAIRS, out=out, batch_size=PAIRS,
                                       progress=False, device=device))
        out.unlink()
        out.with_name(out.stem + "_contact_sheet.png").unlink()

    masks_net, info = load_generator(mask_gan, device)
    images_net, _, _ = load_image_gan(image_gan, device)

    def users():
        z = latent_vectors(0, 0, PAIRS, info["config"].latent_vector).to(device)
        with torch.no_grad():
            masks = masks_net(z)[:, :1] > 0
            images = to_uint8(images_net(masks.float() * 2 - 1))
        out = tmp_path / f"users_{next(counter)}.h5"
        with h5py.File(out, "w") as file:
            file["images"] = images
            file["masks"] = masks.cpu().numpy().astype(np.uint8)
        out.unlink()

    return {"medgan_fast": ours, "users_reference": users}


def test_augment_pairs_cpu(benchmark, tmp_path):
    bench_interleaved(benchmark, f"augment, {PAIRS} pairs of 1 x {SIZE} x {SIZE}, CPU",
                      augment_entries(tmp_path, "cpu"), rounds=8, warmup=1)

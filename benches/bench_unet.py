"""U-Net training, one batch of 8 grey 128 px images with their masks, data included: ours
(the UNet task's step through the framework's loader: cached, resized set, (epoch, index)
keys, channels_last; bf16 autocast on a GPU) against the plain-PyTorch loop our users write
(a TensorDataset of the same tensors, DataLoader(shuffle=True), the same U-Net in NCHW,
BCE-with-logits + Dice, Adam), same model sizes, loss and inputs. No augmentation on either
side: it is the data path and the step that are compared.

images per second = 8 / time, so report.py's ratio (the users' time / ours) is also the
images-per-second ratio.
"""

import torch
from _inputs import bench_interleaved, needs_cuda, synchronised, task_steps

from medgan_fast.data.segmentation import SegmentationDataset
from medgan_fast.models.unet import UNet
from medgan_fast.training.config import TrainConfig
from medgan_fast.training.data import build_loader
from medgan_fast.training.distributed import Distributed
from medgan_fast.training.registry import Context
from medgan_fast.training.segmentation import UNetTask, segmentation_loss

BATCH, SIZE, COUNT = 8, 128, 64


def arrays():
    """COUNT grey images of disks on noise (uint8, 160 x 192) and their 0/1 masks."""
    generator = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(160), torch.arange(192), indexing="ij")
    pairs = []
    for _ in range(COUNT):
        mask = torch.zeros(160, 192, dtype=torch.bool)
        for cy, cx, r in torch.randint(10, 150, (6, 3), generator=generator).tolist():
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= (r % 20 + 4) ** 2
        image = (torch.rand(160, 192, generator=generator) * 80 + 100 * mask).clamp(0, 255).to(torch.uint8)
        pairs.append((image[None].numpy(), mask.numpy()))
    return pairs


def ours(device, dataset):
    config = TrainConfig(arch="UNet", image_size=SIZE, number_channels=1, batch_size=BATCH, seed=0, n_gpu=0,
                         loader_workers=0, learning_rate=1e-3,
                         options={"augment": "none", "segmentation_loss": "bce+dice", "depth": 4, "width": 32})
    task = UNetTask(Context(config, Distributed(device=device)))
    loader, sampler, _ = build_loader(dataset, config)
    return task_steps(task, loader, sampler)


def users(device, dataset):
    """The notebook's loop: tensors in a TensorDataset, a shuffling DataLoader, NCHW."""
    items = [dataset[index] for index in range(len(dataset))]
    tensors = torch.utils.data.TensorDataset(torch.stack([item["image"] for item in items]),
                                             torch.stack([item["mask"] for item in items]))
    loader = torch.utils.data.DataLoader(tensors, batch_size=BATCH, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = UNet(1, 1, 4, 32).to(device)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    state = {"batches": iter(())}

    def step():
        batch = next(state["batches"], None)
        if batch is None:
            state["batches"] = iter(loader)
            batch = next(state["batches"])
        image, mask = (tensor.to(device) for tensor in batch)
        loss = segmentation_loss(model(image), mask, "bce+dice")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def steps_on(device):
    dataset = SegmentationDataset.from_arrays(arrays(), image_size=SIZE, channels=1)
    device = torch.device(device)
    return {"medgan_fast": ours(device, dataset), "users_reference": users(device, dataset)}


def test_unet_training_cpu(benchmark):
    bench_interleaved(benchmark, f"U-Net training step, batch {BATCH} x 1 x {SIZE} x {SIZE}, CPU", steps_on("cpu"),
                      rounds=12, warmup=2)


@needs_cuda
def test_unet_training_cuda(benchmark):
    steps = {name: synchronised(step) for name, step in steps_on("cuda").items()}
    bench_interleaved(benchmark, f"U-Net training step, batch {BATCH} x 1 x {SIZE} x {SIZE}, GPU", steps, rounds=50)

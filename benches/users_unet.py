"""The EMPS segmentation baseline as our users' notebook does it, in plain PyTorch: their
own encoder-decoder (a U-Net with biased convolutions, batch norm, max-pooling and
transposed-convolution upsampling, PyTorch's default initialisation), the images and
binarised masks resized to 128 x 128, no augmentation, BCE-with-logits, Adam at 1e-3, a
shuffling DataLoader over tensors, and the weights of the epoch with the lowest validation
loss kept.

It trains on the same pairs as configs/segment_emps.yaml (train.csv, the same seeded 10%
held out) for the same 30 epochs, and scores test.csv exactly as ``segment evaluate`` does
(medgan_fast.metrics.segmentation at 128 px, threshold 0.5, mean and sd over images):

    python benches/users_unet.py --out results/segment_emps/users_baseline.json

Only the model, the loss, the augmentation and the loop are theirs; the data reading and
the scoring are ours on both sides, so the two numbers compare like with like.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn

from medgan_fast.data.segmentation import SegmentationDataset, segmentation_pairs, validation_split
from medgan_fast.metrics.segmentation import dice, iou, pixel_accuracy

EMPS = "../shared/data/emps"


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU(),
                         nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU())


class UsersUNet(nn.Module):
    def __init__(self, width: int = 32, depth: int = 4):
        super().__init__()
        widths = [width * 2 ** level for level in range(depth + 1)]
        self.down = nn.ModuleList(double_conv(a, b) for a, b in zip([1, *widths[:-2]], widths[:-1]))
        self.bottom = double_conv(widths[-2], widths[-1])
        self.up = nn.ModuleList(nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in zip(widths[:-1], widths[1:]))
        self.merge = nn.ModuleList(double_conv(2 * a, a) for a in widths[:-1])
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, x):
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = nn.functional.max_pool2d(x, 2)
        x = self.bottom(x)
        for up, merge, skip in zip(reversed(self.up), reversed(self.merge), reversed(skips)):
            x = merge(torch.cat([up(x), skip], 1))
        return self.head(x)


def tensors(pairs, image_size):
    data = SegmentationDataset(pairs, image_size=image_size, channels=1)
    items = [data[index] for index in range(len(data))]
    return torch.stack([item["image"] for item in items]), torch.stack([item["mask"] for item in items])


def scores(model, images, masks, batch_size=16):
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
    prediction, target = torch.sigmoid(logits[:, 0]) > 0.5, masks[:, 0] > 0.5
    return {name: metric(prediction, target, reduction="none")
            for name, metric in {"iou": iou, "dice": dice, "accuracy": pixel_accuracy}.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="JSON file for the test scores and the per-epoch log")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args()
    started = time.perf_counter()
    torch.manual_seed(0)
    pairs = segmentation_pairs(f"{EMPS}/images", f"{EMPS}/segmaps", f"{EMPS}/train.csv")
    train_pairs, val_pairs = validation_split(pairs, 0.1, seed=0)
    train_x, train_y = tensors(train_pairs, args.image_size)
    val_x, val_y = tensors(val_pairs, args.image_size)
    test_pairs = segmentation_pairs(f"{EMPS}/images", f"{EMPS}/segmaps", f"{EMPS}/test.csv")
    test_x, test_y = tensors(test_pairs, args.image_size)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train_x, train_y), batch_size=8, shuffle=True)
    model = UsersUNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.BCEWithLogitsLoss()
    best, log = (float("inf"), None, 0), []
    for epoch in range(1, args.epochs + 1):
        model.train()
        losses = []
        for image, mask in loader:
            loss = criterion(model(image), mask)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            val_loss = float(np.mean([criterion(model(val_x[i:i + 16]), val_y[i:i + 16]).item()
                                      for i in range(0, len(val_x), 16)]))
        val_dice = float(scores(model, val_x, val_y)["dice"].mean())
        log.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_loss": val_loss, "val_dice": val_dice})
        print(json.dumps(log[-1]), flush=True)
        if val_loss < best[0]:
            best = (val_loss, {k: v.clone() for k, v in model.state_dict().items()}, epoch)
    model.load_state_dict(best[1])
    test = scores(model, test_x, test_y)
    stems = [image.stem for image, _ in test_pairs]
    result = {name: {"mean": float(values.double().mean()), "sd": float(values.double().std()),
                     "per_image": dict(zip(stems, values.tolist()))} for name, values in test.items()}
    result.update(images=len(stems), best_epoch=best[2], epochs=log, seconds=round(time.perf_counter() - started, 1),
                  settings={"command": "python benches/users_unet.py " + " ".join(
                      f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
                      "model": "UsersUNet(width 32, depth 4)", "loss": "bce", "augment": "none",
                      "optimizer": "Adam 1e-3", "batch_size": 8, "kept": "lowest val_loss"})
    with open(args.out, "w") as file:
        json.dump(result, file, indent=1)
    print(" ".join(f"{name} {result[name]['mean']:.4f}±{result[name]['sd']:.4f}" for name in test),
          f"(best epoch {best[2]}, {result['seconds']} s)")


if __name__ == "__main__":
    main()

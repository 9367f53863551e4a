#!/usr/bin/env bash
# How everything in this folder was made (from the repository root, ../shared beside it):
# the training run of configs/cyclegan_anhir.yaml, one whole H&E image translated to IHC in
# 256 px tiles, and the seam check of that translation (metrics.seams.seam_ratio: the mean
# step across tile edges over the mean step across all other lines; 1 = no seam).
set -euo pipefail
run=runs/cyclegan_anhir
here=results/cyclegan_anhir
source_image=../shared/data/histo_anhir_he_ihc/source_5pc/Izd2-29-041-w35_HE.jpg

[ -f $run/checkpoints/last.pt ] || python -m medgan_fast.train --config configs/cyclegan_anhir.yaml
cp $run/config.yaml $run/log.jsonl $run/metrics.json $run/loss.png $here/
last=$(ls $run/samples/a_to_b_epoch_*.png | sort | tail -1)
cp "$last" "${last/a_to_b/b_to_a}" $here/
cp $source_image $here/whole_image_he.jpg
python -m medgan_fast.translate --checkpoint $run/checkpoints/last.pt --direction AtoB \
    --input $source_image --out $here/whole_image_he_as_ihc.png --tile 256 --overlap 32 --overwrite \
    --no-progress > $here/translate.log 2>&1
python - <<'PY'
import json
import numpy as np
import torch
from PIL import Image
from medgan_fast.data.tiles import tile_edges
from medgan_fast.metrics.seams import seam_ratio

here = "results/cyclegan_anhir"
out = np.asarray(Image.open(f"{here}/whole_image_he_as_ihc.png")).transpose(2, 0, 1)
edges = [tile_edges(n, 256, 32) for n in out.shape[1:]]
check = {"image": "whole_image_he_as_ihc.png", "shape": list(out.shape), "tile": 256, "overlap": 32,
         "seam_ratio": seam_ratio(torch.from_numpy(out.copy()), *edges),
         "translate": open(f"{here}/translate.log").read().strip().splitlines()}
json.dump(check, open(f"{here}/translate_check.json", "w"), indent=2)
print(json.dumps(check, indent=2))
PY

# What the numbers are measured against: the untranslated images (G = identity) on the same
# 32 fixed images of each domain that the run's validation scores.
python - <<'PY'
import json
import torch
from medgan_fast.training import load_config
from medgan_fast.training.cyclegan import CycleGANTask, _channel_stats
from medgan_fast.metrics.distribution import swd

config = load_config("configs/cyclegan_anhir.yaml")
_, fixed = CycleGANTask.datasets(config)
items = [fixed[(0, i)] for i in range(len(fixed))]
a, b = ((torch.stack([item[k] for item in items]) + 1) / 2 for k in "ab")
baseline = {"images_per_domain": len(items),
            # one number for both directions: untranslated A against real B
            "swd": swd(b, a, seed=config.seed).mean,
            "color_mean": float((_channel_stats(a)[0] - _channel_stats(b)[0]).abs().mean()),
            "color_sd": float((_channel_stats(a)[1] - _channel_stats(b)[1]).abs().mean())}
json.dump(baseline, open("results/cyclegan_anhir/untranslated_baseline.json", "w"), indent=2)
print(json.dumps(baseline, indent=2))
PY

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

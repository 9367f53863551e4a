#!/usr/bin/env bash
# How everything in this folder was made (from the repository root, ../shared beside it):
# the ISIC sample split into nevi to train on and held-out nevi + melanomas to score, a
# StyleGAN2-ADA on the training nevi (configs/stylegan2_isic.yaml), an izi_f encoder for it
# on the same nevi, and the held-out images scored (izi_f, then the other distances). Each
# stage's wall time goes to times.txt; distances.md is the table of every distance's test AUC.
set -euo pipefail
data=../shared/data/isic_uda1_derm
runs=runs/anomaly_isic
here=results/anomaly_isic
mkdir -p $runs

stage() {  # stage NAME COMMAND...: runs COMMAND unless NAME finished before, and logs its time
    local name=$1; shift
    [ -f $runs/$name.done ] && return
    local start=$SECONDS
    "$@"
    echo "$name: $((SECONDS - start)) s on $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores" \
        | tee -a $here/times.txt
    touch $runs/$name.done
}
resume() {  # resume RUN_DIR: continue a killed training run from its last checkpoint
    [ -f "$1/checkpoints/last.pt" ] && echo "--set resume=true" || true
}

stage split python -m medgan_fast.anomaly split --data $data/images --labels $data/labels.csv \
    --label-column diagnosis --normal nevus --anomaly melanoma --holdout 0.3 --seed 0 --out $runs/split
stage stylegan2 python -m medgan_fast.train --config configs/stylegan2_isic.yaml --no-progress \
    $(resume runs/stylegan2_isic)
stage encoder python -m medgan_fast.anomaly train-encoder --checkpoint runs/stylegan2_isic/checkpoints/last.pt \
    --data $runs/split/train --epochs 20 --batch-size 8 --kappa 1.0 --out runs --run encoder_isic --no-progress \
    $(resume runs/encoder_isic)
score() {  # score DISTANCE OUT: the held-out images, one split and threshold rule for all
    python -m medgan_fast.anomaly score --encoder runs/encoder_isic/checkpoints/last.pt --distance $1 \
        --data $data/images --labels $runs/split/heldout.csv --label-column diagnosis --anomaly melanoma \
        --val-fraction 0.3 --seed 0 --out $2 --overwrite --no-progress
}
stage score score izif $here/scored
# the pixel and feature distances our users compare, on the same reconstructions and split
for distance in mse l1 feature_mse cosine euclidean; do
    stage score_$distance score $distance $here/distances/$distance
done
cp configs/stylegan2_isic.yaml $runs/split/split.csv $runs/split/heldout.csv $here/
cp runs/stylegan2_isic/log.jsonl $here/stylegan2_log.jsonl
cp runs/stylegan2_isic/loss.png $here/stylegan2_loss.png
cp "$(ls runs/stylegan2_isic/samples/*.png | sort | tail -1)" $here/stylegan2_samples.png
cp runs/encoder_isic/config.yaml $here/encoder_config.yaml
cp runs/encoder_isic/loss.png $here/encoder_loss.png
cp "$(ls runs/encoder_isic/samples/reconstructions_*.png | sort | tail -1)" $here/encoder_reconstructions_train.png

python - <<'PY'
import json
from pathlib import Path

here = Path("results/anomaly_isic")
rows = ["| distance | test ROC AUC | 95% interval | F1 | precision | recall | threshold (chosen on validation) |",
        "|---|---:|---|---:|---:|---:|---:|"]
for folder in [here / "scored", *sorted((here / "distances").iterdir())]:
    report = json.loads((folder / "report.json").read_text())
    test, auc = report["test"], report["test"]["roc_auc"]
    rows.append(f"| {report['distance']} | {auc['auc']:.3f} | {auc['low']:.3f} to {auc['high']:.3f} | "
                f"{test['f1']:.3f} | {test['precision']:.3f} | {test['recall']:.3f} | {test['threshold']:.4g} |")
counts = json.loads((here / "scored" / "report.json").read_text())["counts"]
table = "\n".join(rows) + f"\n\nTest part: {counts['test']}; validation part: {counts['validation']}.\n"
(here / "distances.md").write_text(table)
print(table)
PY

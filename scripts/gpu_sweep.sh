#!/usr/bin/env bash
# The student-variant search of issue 3 on one GPU machine (results in docs/ablations.md).
# Teachers are trained from scratch first (resnet8 settings in parallel, resnet20 as the distillation teacher),
# cross-entropy runs start at once, KD runs once the resnet20 teacher exists. Needs CNN2GNN_DATA with fashion-mnist.
set -uo pipefail
OUT=${OUT:-runs/gpu}
RUNS=${RUNS:-/tmp/gpu-runs}
JOBS=${JOBS:-12}
EPOCHS=${EPOCHS:-30}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$RUNS"
T="python3 -m cnn2gnn teacher --data fashion-mnist --device cuda --quiet"
$T --arch resnet20 --epochs 30 --out "$RUNS/t-r20" >> "$OUT/teachers.log" 2>&1 &
$T --arch resnet8 --epochs 5 --out "$RUNS/t-r8" >> "$OUT/teachers.log" 2>&1 &
$T --arch resnet8 --epochs 5 --set data.hflip=false --out "$RUNS/t-r8-noflip" >> "$OUT/teachers.log" 2>&1 &
$T --arch resnet8 --epochs 5 --set optim.batch_size=64 --out "$RUNS/t-r8-bs64" >> "$OUT/teachers.log" 2>&1 &
$T --arch resnet8 --epochs 5 --set data.augment=false --out "$RUNS/t-r8-noaug" >> "$OUT/teachers.log" 2>&1 &
S="python3 scripts/sweep.py --device cuda --jobs $JOBS --set optim.epochs=$EPOCHS"
$S --out "$RUNS/ce" --results "$OUT/ce" --variants mlp,sage-anchors-labels,sage-batch,gcn-batch > "$RUNS/ce.log" 2>&1
wait
$S --out "$RUNS/kd" --results "$OUT/kd" --teacher "$RUNS/t-r20" --variants \
mlp,sage-anchors-labels,sage-batch,gcn-batch,sage-anchors,sage-anchors-labels-m4096,sage-anchors-labels-head,\
sage-anchors-labels-pixels,gcn-anchors-labels,sage-anchors-labels-detach,\
mlp+distill.alpha=0.5+distill.temperature=2,sage-anchors-labels+distill.alpha=0.5+distill.temperature=2,\
mlp+distill.alpha=0.5,sage-anchors-labels+distill.alpha=0.5,\
sage-anchors-labels+model.k=5,sage-anchors-labels+model.k=20 > "$RUNS/kd.log" 2>&1
for t in "$RUNS"/t-*; do echo "$(basename "$t") $(tr -d '\n ' < "$t/summary.json")"; done >> "$OUT/teachers.log"
tar czf "$OUT/runs.tgz" --exclude="*.safetensors" --exclude="*.pt" -C "$RUNS" .

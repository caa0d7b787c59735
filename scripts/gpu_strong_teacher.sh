#!/usr/bin/env bash
# Issue 3's last named direction (docs/ablations.md s.8): a stronger teacher trained with the augmentation the student
# will see, then the MLP and the graph student distilled from it (a) live on shifted+flipped views for PATIENT
# epochs and (b) from cached logits on clean images for 30 epochs, side by side on one GPU.
# Needs CNN2GNN_DATA with fashion-mnist. Everything but model weights of the students is copied to OUT.
set -uo pipefail
OUT=${OUT:-runs/gpu-strong}
RUNS=${RUNS:-/tmp/gpu-strong-runs}
ARCH=${ARCH:-resnet20}
TEPOCHS=${TEPOCHS:-20}
TLIMIT=${TLIMIT:-240}
PATIENT=${PATIENT:-60}
SEEDS=${SEEDS:-0,1,2}
LIMIT=${LIMIT:-300}
VARIANTS=${VARIANTS:-mlp,sage-batch}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$RUNS"
start=$(date +%s)
timeout "$TLIMIT" python3 -m cnn2gnn teacher --data fashion-mnist --arch "$ARCH" --epochs "$TEPOCHS" \
    --set data.augment=true --device cuda --quiet --out "$RUNS/teacher" > "$OUT/teacher.log" 2>&1
echo "teacher exit $? after $(( $(date +%s) - start )) s" >> "$OUT/teacher.log"
tar czf "$OUT/teacher.tgz" --exclude=ckpt --exclude=cache -C "$RUNS" teacher 2>/dev/null
[ -f "$RUNS/teacher/model.safetensors" ] || { echo "no teacher, stopping" >> "$OUT/teacher.log"; exit 1; }
TDIR="$RUNS/teacher"  # (prefix assignments below are made left to right: name the teacher first)
OUT="$OUT/live" RUNS="$RUNS/live" TEACHER="$TDIR" AUGMENT=true EPOCHS="$PATIENT" SEEDS="$SEEDS" JOBS=6 \
    LIMIT="$LIMIT" VARIANTS="$VARIANTS" bash scripts/gpu_distill.sh &
OUT="$OUT/cached" RUNS="$RUNS/cached" TEACHER="$TDIR" AUGMENT=false EPOCHS=30 SEEDS="$SEEDS" JOBS=6 \
    LIMIT="$LIMIT" VARIANTS="$VARIANTS" bash scripts/gpu_distill.sh &
wait
echo "total $(( $(date +%s) - start )) s" >> "$OUT/teacher.log"

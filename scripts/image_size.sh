#!/usr/bin/env bash
# The student's input size against its cost (issue 13): one ResNet-8 teacher on Fashion-MNIST at 28x28, students
# distilled at 28x28 (the data's size) and at 14x14 (--image-size 14), 8 epochs, seed 0; accuracy over 3 shuffles and
# images/s at batch 1 and 256 from `cnn2gnn evaluate --speed`. Results: OUT/*.json, summarised by hand in the README.
#   bash scripts/image_size.sh            # OUT=runs/image-size, THREADS=1
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/image-size}
THREADS=${THREADS:-1}
common=(--data fashion-mnist --seed 0 --quiet --set "run.threads=$THREADS")
[ -f "$OUT/teacher/summary.json" ] || "$PY" -m cnn2gnn teacher "${common[@]}" --arch resnet8 --epochs 5 --out "$OUT/teacher"
for size in 28 14; do
    [ -f "$OUT/student$size/summary.json" ] || "$PY" -m cnn2gnn distill "${common[@]}" --teacher "$OUT/teacher" \
        --image-size "$size" --epochs 8 --out "$OUT/student$size"
    OMP_NUM_THREADS=$THREADS "$PY" -m cnn2gnn evaluate --model "$OUT/student$size" --seeds 3 --speed --json \
        > "$OUT/student$size.json"
done
"$PY" -m cnn2gnn evaluate --model "$OUT/teacher" --seeds 1 --speed --json > "$OUT/teacher.json"

#!/usr/bin/env bash
# `make demo`: train a CNN teacher on Fashion-MNIST, distil the two-layer GNN student from it, and print both
# accuracies (mean +- std over seeded test shuffles) and their inference speed on this machine.
set -euo pipefail
OUT=${1:-runs/demo}
DATA=${DATA:-fashion-mnist}
TEACHER_EPOCHS=${TEACHER_EPOCHS:-5}
STUDENT_EPOCHS=${STUDENT_EPOCHS:-}
CLI=(.venv/bin/python -m cnn2gnn)
mkdir -p "$OUT"
if [ -f "$OUT/teacher/model.safetensors" ]; then
  echo "== teacher: reusing $OUT/teacher"
else
  echo "== teacher: resnet8, $TEACHER_EPOCHS epochs on $DATA"
  "${CLI[@]}" teacher --data "$DATA" --arch resnet8 --epochs "$TEACHER_EPOCHS" --out "$OUT/teacher"
fi
echo "== student: two-layer GNN distilled from the teacher"
"${CLI[@]}" distill --data "$DATA" --teacher "$OUT/teacher" ${STUDENT_EPOCHS:+--epochs "$STUDENT_EPOCHS"} --overwrite --out "$OUT/student"
echo "== evaluation (test split, 3 seeded shuffles, images/s on this machine)"
"${CLI[@]}" evaluate --model "$OUT/teacher" --seeds 3 --speed
"${CLI[@]}" evaluate --model "$OUT/student" --seeds 3 --speed --graph anchors
"${CLI[@]}" evaluate --model "$OUT/student" --seeds 3 --speed --graph batch

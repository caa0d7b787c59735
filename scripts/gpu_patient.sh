#!/usr/bin/env bash
# "Patient" distillation on one GPU (issue 3, docs/ablations.md): the same-width MLP and the graph student, each
# distilled for EPOCHS epochs on shifted+flipped views with the teacher run live on the same view (no cached
# logits), same seeds and budget. Needs CNN2GNN_DATA with fashion-mnist and a teacher folder in TEACHER.
# Run folders go to RUNS; metrics, summaries and the table are copied to OUT even when LIMIT cuts the sweep short.
set -uo pipefail
OUT=${OUT:-runs/gpu-patient}
RUNS=${RUNS:-/tmp/gpu-patient-runs}
TEACHER=${TEACHER:-runs/fm-resnet8-v2}
EPOCHS=${EPOCHS:-100}
SEEDS=${SEEDS:-0,1}
JOBS=${JOBS:-6}
LIMIT=${LIMIT:-480}
VARIANTS=${VARIANTS:-mlp,sage-batch,sage-batch+model.graph_space=proj}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$RUNS"
timeout "$LIMIT" python3 scripts/sweep.py --device cuda --jobs "$JOBS" --seeds "$SEEDS" --teacher "$TEACHER" \
    --out "$RUNS" --results "$OUT" --variants "$VARIANTS" \
    --set optim.epochs="$EPOCHS" --set data.augment=true > "$OUT/sweep.log" 2>&1
echo "sweep exit $?" >> "$OUT/sweep.log"
for run in "$RUNS"/*/; do
    name=$(basename "$run")
    mkdir -p "$OUT/runs/$name"
    cp "$run"/metrics.jsonl "$run"/summary.json "$run"/config.yaml "$OUT/runs/$name/" 2>/dev/null
done
nvidia-smi --query-gpu=name,memory.used --format=csv >> "$OUT/sweep.log" 2>&1

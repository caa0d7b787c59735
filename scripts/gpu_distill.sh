#!/usr/bin/env bash
# Student variants distilled side by side on one GPU (issue 3, docs/ablations.md): VARIANTS (scripts/sweep.py names,
# "+key=value" adds overrides) x SEEDS, EPOCHS epochs, KD from TEACHER. The defaults are the "patient" run of
# ablations s.6: the MLP and the graph student on shifted+flipped views (AUGMENT=true) with the teacher run live on
# the same view; AUGMENT=false uses cached teacher logits on clean images (s.7). Needs CNN2GNN_DATA with
# fashion-mnist and a teacher folder in TEACHER.
# Run folders go to RUNS; metrics, summaries and the table are copied to OUT even when LIMIT cuts the sweep short.
set -uo pipefail
OUT=${OUT:-runs/gpu-patient}
RUNS=${RUNS:-/tmp/gpu-distill-runs}
AUGMENT=${AUGMENT:-true}
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
    --set optim.epochs="$EPOCHS" --set data.augment="$AUGMENT" > "$OUT/sweep.log" 2>&1
echo "sweep exit $?" >> "$OUT/sweep.log"
for run in "$RUNS"/runs/*/; do
    name=$(basename "$run")
    mkdir -p "$OUT/runs/$name"
    cp "$run"/metrics.jsonl "$run"/summary.json "$run"/config.yaml "$OUT/runs/$name/" 2>/dev/null
done
nvidia-smi --query-gpu=name,memory.used --format=csv >> "$OUT/sweep.log" 2>&1

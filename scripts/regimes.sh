#!/usr/bin/env bash
# The label-regime study of issue 14: `cnn2gnn bench --preset regimes` on Fashion-MNIST under few labels
# (10, 100, 1000 per class), noisy labels (20%, 40% flipped) and every label, 3 seeds each, then the summary table
# and plot of the gap to the best same-budget MLP (scripts/regimes_summary.py).
#   bash scripts/regimes.sh                  # all regimes into runs/regimes/, summary into docs/results/regimes/
#   REGIMES="n10 p40" bash scripts/regimes.sh
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/regimes}
THREADS=${THREADS:-2}
REGIMES=${REGIMES:-"n10 p40 n100 p20 n1000 all"}
declare -A FLAGS=([all]="" [n10]="--labels-per-class 10" [n100]="--labels-per-class 100"
                  [n1000]="--labels-per-class 1000" [p20]="--label-noise 0.2" [p40]="--label-noise 0.4")
for name in $REGIMES; do
    # shellcheck disable=SC2086
    "$PY" -m cnn2gnn bench --data fashion-mnist --preset regimes --out "$OUT/$name" --threads "$THREADS" --quiet \
        ${FLAGS[$name]}
done
"$PY" scripts/regimes_summary.py "$OUT" --out docs/results/regimes

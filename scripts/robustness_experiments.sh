#!/usr/bin/env bash
# The robustness comparison of benchmarks/RESULTS.md ("Any visual condition"): four models trained with
# `make demo`'s schedule (1500 iterations of configs/synthetic.yaml's settings), each evaluated on the
# test split with every input setting, then the report and the gain-invariance check.
#   bash scripts/robustness_experiments.sh [OUT]     (default OUT: output/exp16; about 4 x 10 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-output/exp16}
PY=${PY:-.venv/bin/python}
export DETECTRON2_DATASETS=${DETECTRON2_DATASETS:-datasets}
$PY -m sartm_d2.data.synthetic --root "$DETECTRON2_DATASETS"
train() { name=$1; shift; $PY train_net.py "$@" OUTPUT_DIR "$OUT/$name"; }
# The plain model (the main job), with the fixed thermal normalisation and with the per-image stretch.
train plain --config-file configs/synthetic.yaml TEST.MODALITIES "('all',)"
train plain-pct --config-file configs/synthetic.yaml INPUT.THERMAL_NORM percentile TEST.MODALITIES "('all',)"
# The previous any-modality model: modality dropout only.
train dropout --config-file configs/synthetic-anymodal.yaml INPUT.THERMAL_NORM none MODEL.SARTM.FUSION paper \
  INPUT.CORRUPTION_RAMP "(0, 0)" INPUT.MODALITY_DROPOUT.DEAD_FRAME 0.0 INPUT.DEGRADATION_AUG_PROB 0.0 \
  INPUT.THERMAL_PHOTOMETRIC.PROB 0.0 \
  MODEL.SARTM.CONSISTENCY.LOSS_WEIGHT 0.0 MODEL.SARTM.CONSISTENCY.TRUST_WEIGHT 0.0
# The robust model as configured.
train robust --config-file configs/synthetic-anymodal.yaml
$PY tools/anymodal_report.py --robust "$OUT/robust" --dropout "$OUT/dropout" --baseline "$OUT/plain" || true
for name in plain plain-pct robust; do
  cfg=configs/synthetic.yaml; [ "$name" = robust ] && cfg=configs/synthetic-anymodal.yaml
  extra=(); [ "$name" = plain-pct ] && extra=(INPUT.THERMAL_NORM percentile)
  $PY tools/gain_invariance.py --config-file "$cfg" "${extra[@]}" MODEL.WEIGHTS "$OUT/$name/model_final.pth" || true
done

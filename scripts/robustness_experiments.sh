#!/usr/bin/env bash
# The robustness comparison of benchmarks/RESULTS.md ("Robust without a price"), on both synthetic sets:
# the embedded set (where every setting was chosen) and the MFNet-like family (confirmation only). Per
# set, three models on `make demo`'s schedule: the plain model (1500 iterations), modality dropout alone
# (1500 iterations, the previous any-modality model), and the robust recipe (a second stage of
# configs/*-anymodal.yaml on that plain model); each evaluated on every input setting, then the report.
#   bash scripts/robustness_experiments.sh [OUT]   (default OUT: output/robustness; about 1 hour on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-output/robustness}
PY=${PY:-.venv/bin/python}
export DETECTRON2_DATASETS=${DETECTRON2_DATASETS:-datasets}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # two runs at a time on 2 cores: one thread each
$PY -m sartm_d2.data.synthetic --root "$DETECTRON2_DATASETS"
$PY -m sartm_d2.data.synthetic_mfnet --root "$DETECTRON2_DATASETS"
# The dropout-only model: configs/*-anymodal.yaml's modality dropout, nothing else of the recipe.
DROPOUT=(INPUT.MODALITY_DROPOUT.BOTH 0.5 INPUT.MODALITY_DROPOUT.RGB_ONLY 0.25
         INPUT.MODALITY_DROPOUT.THERMAL_ONLY 0.25)
ALL=(TEST.MODALITIES "('all',)")
run_set() {  # name, plain config, robust config, report class options...
  local name=$1 plain=$2 robust=$3; shift 3
  local dir="$OUT/$name"
  $PY train_net.py --config-file "$plain" "${ALL[@]}" OUTPUT_DIR "$dir/plain"
  $PY train_net.py --config-file "$plain" "${ALL[@]}" "${DROPOUT[@]}" OUTPUT_DIR "$dir/dropout" &
  $PY train_net.py --config-file "$robust" MODEL.WEIGHTS "$dir/plain/model_final.pth" OUTPUT_DIR "$dir/robust"
  wait
  local dataset
  dataset=$($PY -c "from sartm_d2 import get_sartm_cfg; print(get_sartm_cfg('$plain').DATASETS.TEST[0])")
  $PY tools/anymodal_report.py --robust "$dir/robust" --dropout "$dir/dropout" --baseline "$dir/plain" \
    --dataset "$dataset" "$@" | tee "$dir/report.md" || true
}
run_set embedded configs/synthetic.yaml configs/synthetic-anymodal.yaml
run_set mfnet configs/synthetic-mfnet.yaml configs/synthetic-mfnet-anymodal.yaml \
  --warm car person bike --cold curve car_stop guardrail color_cone bump

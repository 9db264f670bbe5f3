# The README's two commands. Both create .venv on first use (scripts/setup_env.sh) and reuse it.
PY := .venv/bin/python
STAMP := .venv/.sartm_setup_v3
# Where datasets live (Detectron2's convention); the synthetic set is written to $(DATA)/SyntheticRGBT.
DATA ?= $(or $(DETECTRON2_DATASETS),datasets)
DEMO_OUT ?= output/synthetic
# No PYTHONWARNINGS: sartm_d2.compat silences the known dependency warnings, and ours must show.
RUN := DETECTRON2_DATASETS=$(DATA)

.PHONY: demo test lint setup

setup: $(STAMP)

$(STAMP):
	bash scripts/setup_env.sh

# The main job: build the embedded synthetic RGB-T set, train SARTM on it (CPU), evaluate on its
# test split (table with day/night IoU), and draw RGB | thermal | prediction panels.
demo: $(STAMP)
	$(RUN) $(PY) -m sartm_d2.data.synthetic --root $(DATA)
	$(RUN) $(PY) train_net.py --config-file configs/synthetic.yaml OUTPUT_DIR $(DEMO_OUT)
	$(RUN) $(PY) demo/demo.py --config-file configs/synthetic.yaml \
	  --input "$(DATA)/SyntheticRGBT/images/0012[0-5]?.png" --output $(DEMO_OUT)/demo \
	  --opts MODEL.WEIGHTS $(DEMO_OUT)/model_final.pth

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q --durations=15 tests

lint: $(STAMP)
	$(PY) -m ruff check .

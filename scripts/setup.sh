#!/usr/bin/env bash
# Idempotent set-up: creates $VENV (default .venv) and installs torch, torchvision, Detectron2,
# the other dependencies and this package (editable). A second run with nothing changed takes
# seconds: it compares a hash of the install inputs with the one stored in the venv.
#
# Detectron2 is not on PyPI. If the venv can already import `detectron2` (e.g. a user's own build
# from source with CUDA ops), it is kept. Otherwise the route verified in ../shared/REFERENCE.md §2
# is used: the `sal-detectron2==0.7.2` wheel (a re-publication of upstream Detectron2, Apache-2.0),
# tagged cp310; its Python code runs on CPython 3.11, its `_C` extension is simply not loaded.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
D2_WHEEL_SPEC=${D2_WHEEL_SPEC:-sal-detectron2==0.7.2}
CACHE=${FPN_VARIANTS_CACHE:-.cache}

hash=$( { cat scripts/setup.sh requirements.txt setup.py; echo "$TORCH_SPEC $D2_WHEEL_SPEC"; } | sha256sum | cut -d' ' -f1)
stamp="$VENV/.fpn_variants_setup"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ] && "$VENV/bin/python" -c "import detectron2, fpn_variants" 2>/dev/null; then
  echo "setup: $VENV is up to date"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q $TORCH_SPEC

if "$VENV/bin/python" -c "import detectron2" 2>/dev/null; then
  echo "setup: keeping the detectron2 already importable in $VENV"
else
  mkdir -p "$CACHE/wheels"
  whl=$(ls "$CACHE"/wheels/sal_detectron2-*-py3-none-any.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    tmp=$(mktemp -d)
    "${pip[@]}" download -q --no-deps --only-binary=:all: --python-version 3.10 "$D2_WHEEL_SPEC" -d "$tmp"
    src=$(ls "$tmp"/sal_detectron2-*.whl | head -n1)
    ver=$(basename "$src" | cut -d- -f2)
    # pip refuses a cp310-tagged file on another Python; the pure-Python part is what we use.
    whl="$CACHE/wheels/sal_detectron2-$ver-py3-none-any.whl"
    mv "$src" "$whl.tmp" && mv "$whl.tmp" "$whl"
    rm -rf "$tmp"
  fi
  "${pip[@]}" install -q "$whl" -r requirements.txt
fi
"${pip[@]}" install -q -r requirements.txt
"${pip[@]}" install -q --no-deps --no-build-isolation -e .
"$VENV/bin/python" -c "import detectron2, fpn_variants, pycocotools, cv2; from detectron2.engine import launch; from detectron2.evaluation import COCOEvaluator; import detectron2.model_zoo; print('setup: detectron2', detectron2.__version__, 'from', detectron2.__file__)"
echo "$hash" > "$stamp"

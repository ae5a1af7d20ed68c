#!/usr/bin/env bash
# Installs everything gen3d and its tests need on a fresh machine (CPU).
# On a GPU machine install your CUDA build of torch first; pip keeps it (requirements say torch>=2.4).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -r requirements.txt
# Blender (headless import tests of the exported meshes) from Debian, when we may install it.
if ! command -v blender >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends blender python3-numpy >/dev/null) \
    || echo "note: could not install Blender; its import tests will be skipped"
fi
# Chromium (headless browser test of the run report and gallery, tests/test_report.py) from Debian, when root.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null) \
    || echo "note: could not install chromium; the report's browser tests will be skipped"
fi

#!/usr/bin/env bash
# The test command of the README: installs what is missing, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python -m pytest -q -p no:cacheprovider tests "$@"

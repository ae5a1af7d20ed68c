#!/usr/bin/env bash
# The test command of the README: installs what is missing, lints and type-checks, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python -m ruff check .  # rules in pyproject.toml
python -m ruff format --check .  # formatting (pyproject.toml [tool.ruff.format])
python -m mypy  # the files listed under [tool.mypy] in pyproject.toml (~10 s)
python -m pytest -q -p no:cacheprovider tests "$@"

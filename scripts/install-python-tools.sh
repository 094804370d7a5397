#!/usr/bin/env bash
# Installs the Python readers the end-to-end tests check Parquet output with (DuckDB and
# pyarrow, pinned in tests/py/requirements.txt), unless they are already importable.
set -euo pipefail
cd "$(dirname "$0")/.."
if python3 -c 'import duckdb, pyarrow' >/dev/null 2>&1; then
    exit 0
fi
echo "installing the Python test tools (duckdb, pyarrow)"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    -r tests/py/requirements.txt

#!/usr/bin/env bash
# Installs the Python readers the end-to-end tests check output with (DuckDB and pyarrow for
# Parquet, PyYAML for Kubernetes manifests; pinned in tests/py/requirements.txt), unless they
# are already importable.
set -euo pipefail
cd "$(dirname "$0")/.."
if python3 -c 'import duckdb, pyarrow, yaml' >/dev/null 2>&1; then
    exit 0
fi
echo "installing the Python test tools (duckdb, pyarrow, pyyaml)"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    -r tests/py/requirements.txt

#!/usr/bin/env bash
# Runs Tributary's whole test suite on a fresh machine: installs what the tests need, then
# `cargo test --workspace`. Safe to run again: installed tools are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kafka tests run against a real broker, Tansu.
scripts/install-tansu.sh
export PATH="${HOME}/.cargo/bin:${PATH}"
# The Parquet tests read the output with DuckDB and pyarrow.
scripts/install-python-tools.sh

cargo test --workspace --locked "$@"

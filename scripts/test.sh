#!/usr/bin/env bash
# Runs Tributary's whole test suite on a fresh machine: installs what the tests need, then
# `cargo test --workspace`. Safe to run again: installed tools are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

# Rust's formatter and linter are part of the toolchain image; add them if missing.
for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
        rustup component add "${component}"
    fi
done

cargo test --workspace --locked "$@"

#!/usr/bin/env bash
# Installs the Tansu broker (Apache-Kafka-compatible, from crates.io) into ~/.cargo/bin,
# unless the right version is already there. The first build takes 10-15 minutes.
set -euo pipefail
version=0.6.0
if command -v tansu >/dev/null 2>&1 && [ "$(tansu --version 2>/dev/null)" = "tansu ${version}" ]; then
    exit 0
fi
if [ -x "${HOME}/.cargo/bin/tansu" ] && [ "$("${HOME}/.cargo/bin/tansu" --version 2>/dev/null)" = "tansu ${version}" ]; then
    exit 0
fi
echo "installing tansu ${version} (about 10-15 minutes on a fresh machine)"
cargo install tansu --version "${version}" --features libsql,dynostore --locked

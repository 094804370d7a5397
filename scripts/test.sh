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
# `tributary submit` is tested against a real OpenSSH server on a loopback port.
if [ ! -x /usr/sbin/sshd ]; then
    echo "installing openssh-server (for the tributary submit test)"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        openssh-server >/dev/null
fi

cargo test --workspace --locked "$@"

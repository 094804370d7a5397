#!/usr/bin/env bash
# Runs Tributary's whole test suite on a fresh machine: installs what the tests need, then
# `cargo test --workspace`. Safe to run again: installed tools are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kafka tests run against Apache Kafka (its jars in ~/.cache/tributary; Java and Maven
# from apt if missing), each test binary starting its own brokers on free loopback ports.
scripts/install-kafka.sh >/dev/null
# The Avro tests start Apicurio Registry, a schema registry (its archive in ~/.cache/tributary,
# with a Java 21+ runtime from PyPI if the machine has none).
scripts/install-registry.sh >/dev/null
# The Parquet tests read the output with DuckDB and pyarrow; the Avro tests write and read
# records with Confluent's Python client.
scripts/install-python-tools.sh
# `tributary submit` is tested against a real OpenSSH server on a loopback port, and the
# status page in headless Chromium; both come from Debian's packages.
packages=()
[ -x /usr/sbin/sshd ] || packages+=(openssh-server)
command -v chromium >/dev/null || packages+=(chromium fonts-liberation)
if [ "${#packages[@]}" -gt 0 ]; then
    echo "installing ${packages[*]} (for the tributary submit and status page tests)"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${packages[@]}" >/dev/null
fi

cargo test --workspace --locked "$@"

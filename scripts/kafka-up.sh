#!/usr/bin/env bash
# Starts a local Tansu broker (Kafka-compatible) on 127.0.0.1:${PORT:-9092} with SQLite storage
# in ${DATA:-data/tansu} and creates the given topics: scripts/kafka-up.sh readings:4 stats:2
# Installs Tansu first if needed. Stop it with: kill "$(cat "${DATA:-data/tansu}/tansu.pid")"
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-tansu.sh
export PATH="${HOME}/.cargo/bin:${PATH}"
port=${PORT:-9092}
data=${DATA:-data/tansu}
mkdir -p "${data}"
url="tcp://127.0.0.1:${port}"
(cd "${data}" && exec tansu broker --listener-url "${url}" --advertised-listener-url "${url}" \
    --storage-engine sqlite://tansu.db > tansu.log 2>&1) &
echo $! > "${data}/tansu.pid"
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then break; fi
    sleep 0.1
done
for spec in "$@"; do
    topic=${spec%%:*}
    partitions=${spec#*:}
    [ "${partitions}" = "${spec}" ] && partitions=1
    tansu topic create "${topic}" --partitions "${partitions}" --broker "${url}" >/dev/null \
        || echo "topic ${topic} exists or could not be created"
done
echo "Tansu listening on 127.0.0.1:${port} (pid $(cat "${data}/tansu.pid"), data in ${data})"

#!/usr/bin/env bash
# Starts Apache Kafka (one process, broker and KRaft controller) on 127.0.0.1 and creates
# topics; installs it first if needed (scripts/install-kafka.sh). Shared by the README, CI and
# the tests' broker helper (tests/src/kafka.rs).
#
#   scripts/kafka-up.sh readings:4 stats:2   # in the background on 127.0.0.1:9092, two topics
#   scripts/kafka-up.sh devices:1:compact    # a compacted topic (cleanup.policy=compact)
#   scripts/kafka-up.sh --stop               # stops it (data stays in data/kafka)
#   scripts/kafka-up.sh --attached           # in the foreground, log on stdout, until stdin
#                                            # closes; then SIGKILLed (what the tests use)
#
# Options: --set key=value (a broker setting, repeatable); --remove-data (with --attached:
# remove DATA once the broker is killed). Environment: PORT (9092),
# CONTROLLER_PORT (PORT + 1), DATA (data/kafka: the log directory, formatted on first use and
# kept across restarts), KAFKA_HEAP (512m).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
port=${PORT:-9092}
controller=${CONTROLLER_PORT:-$((port + 1))}
data=${DATA:-${root}/data/kafka}
heap=${KAFKA_HEAP:-512m}

mode=background
remove_data=
overrides=()
topics=()
while [ $# -gt 0 ]; do
    case "$1" in
        --attached) mode=attached ;;
        --stop) mode=stop ;;
        --remove-data) remove_data=1 ;;
        --set) overrides+=(--override "$2"); shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        -*) echo "kafka-up.sh: unknown option $1" >&2; exit 2 ;;
        *) topics+=("$1") ;;
    esac
    shift
done

if [ "${mode}" = stop ]; then
    if [ -f "${data}/kafka.pid" ] && kill "$(cat "${data}/kafka.pid")" 2>/dev/null; then
        rm -f "${data}/kafka.pid"
        echo "Kafka stopped"
    else
        echo "no Kafka running from ${data}"
    fi
    exit 0
fi

home=$("${root}/scripts/install-kafka.sh")
classpath="${home}/libs/*"
mkdir -p "${data}/log"
# One node that is broker and controller, small and quick: internal topics with one
# partition and one replica, no rebalance delay, timed-out transactions aborted within a
# second, topics only created on request.
cat > "${data}/server.properties" <<PROPERTIES
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:${controller}
listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controller}
advertised.listeners=PLAINTEXT://127.0.0.1:${port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=${data}/log
num.partitions=1
auto.create.topics.enable=false
offsets.topic.num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
num.network.threads=2
num.io.threads=4
log.cleaner.threads=1
PROPERTIES

# Native libraries the JVM unpacks (lz4, zstd, snappy) go into the data directory, not /tmp,
# so that a killed broker leaves nothing behind but its data.
mkdir -p "${data}/tmp"
java=(java -Xms128m "-Xmx${heap}" -XX:+UseG1GC -XX:-UsePerfData -Djava.awt.headless=true
      "-Djava.io.tmpdir=${data}/tmp" "-Dlog4j2.configurationFile=${home}/log4j2.properties"
      -cp "${classpath}")
if [ ! -f "${data}/log/meta.properties" ]; then
    # A random cluster id (a base64url UUID), not starting with '-', which the tool would take
    # for an option (as Kafka's own Uuid.randomUuid avoids); the JIT's first tier is enough
    # for a one-off.
    cluster=-
    while [[ "${cluster}" == -* ]]; do
        cluster=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    done
    "${java[@]}" -XX:TieredStopAtLevel=1 kafka.tools.StorageTool format \
        -t "${cluster}" -c "${data}/server.properties" >/dev/null
fi
server=("${java[@]}" kafka.Kafka "${data}/server.properties" "${overrides[@]}")

if [ "${mode}" = attached ]; then
    # The broker runs until this script's standard input closes (the test that started it
    # ended, however it ended), then it is killed outright, as a crash would.
    "${server[@]}" <&- &
    pid=$!
    trap 'kill -KILL "${pid}" 2>/dev/null || true; wait "${pid}" 2>/dev/null || true
          if [ -n "${remove_data}" ]; then rm -rf "${data}"; fi' EXIT
    cat >/dev/null || true
    exit 0
fi

if [ -f "${data}/kafka.pid" ] && kill -0 "$(cat "${data}/kafka.pid")" 2>/dev/null; then
    echo "Kafka already running from ${data} (pid $(cat "${data}/kafka.pid"))"
else
    : > "${data}/server.log"
    nohup "${server[@]}" >> "${data}/server.log" 2>&1 < /dev/null &
    echo $! > "${data}/kafka.pid"
    # Ready once the broker logs that it has started (it then answers metadata requests).
    for _ in $(seq 1 600); do
        grep -q "Kafka Server started" "${data}/server.log" && break
        if ! kill -0 "$(cat "${data}/kafka.pid")" 2>/dev/null; then
            echo "Kafka exited at start-up:" >&2
            tail -n 30 "${data}/server.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    grep -q "Kafka Server started" "${data}/server.log" \
        || { echo "Kafka did not start within 60 s (log: ${data}/server.log)" >&2; exit 1; }
fi
for spec in "${topics[@]}"; do
    IFS=: read -r topic partitions policy <<< "${spec}"
    config=()
    [ -n "${policy}" ] && config=(--config "cleanup.policy=${policy}")
    "${java[@]}" -XX:TieredStopAtLevel=1 org.apache.kafka.tools.TopicCommand \
        --bootstrap-server "127.0.0.1:${port}" --create --if-not-exists --topic "${topic}" \
        --partitions "${partitions:-1}" --replication-factor 1 "${config[@]}" >/dev/null
done
echo "Kafka listening on 127.0.0.1:${port} (pid $(cat "${data}/kafka.pid"), data in ${data}); stop it with scripts/kafka-up.sh --stop"

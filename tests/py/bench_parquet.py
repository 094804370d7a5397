#!/usr/bin/env python3
"""Writes the Parquet benchmark's rows (tests/benches/parquet.rs) with pyarrow, for scale.

Usage: bench_parquet.py [ROWS]   (default 5 000 000)

The columns are built vectorised (pyarrow.compute, not Python loops), then written with
zstd level 3 and page statistics, as the Rust benchmark does; the write alone is timed.
"""
import os
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

rows = int(sys.argv[1]) if len(sys.argv) > 1 else 5_000_000
i = pa.array(range(rows), pa.int64())
device = pc.cast(pc.subtract(i, pc.multiply(pc.divide(i, 10_000), 10_000)), pa.uint32())
value = pc.add(20.0, pc.divide(pc.cast(pc.subtract(pc.multiply(i, 7919), pc.multiply(pc.divide(pc.multiply(i, 7919), 1000), 1000)), pa.float64()), 100.0))
sensors = pa.array(["temperature", "humidity", "pressure", "co2"])
firmware = pa.array([f"v1.{k}" for k in range(7)])
ts = pc.add(i, 1_767_225_600_000)
table = pa.table({
    "device": device,
    "site": pc.cast(pc.divide(device, 100), pa.uint32()),
    "sensor": pc.take(sensors, pc.subtract(i, pc.multiply(pc.divide(i, 4), 4))),
    "firmware": pc.take(firmware, pc.subtract(device, pc.multiply(pc.divide(device, 7), 7))),
    "value": value,
    "min": pc.subtract(value, 1.5),
    "max": pc.add(value, 1.5),
    "count": pc.cast(pc.subtract(i, pc.multiply(pc.divide(i, 60), 60)), pa.uint64()),
    "ts": pc.cast(ts, pa.timestamp("ms", tz="UTC")),
    "ingested": pc.cast(pc.add(ts, 250), pa.timestamp("ms", tz="UTC")),
})
with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "out.parquet")
    started = time.perf_counter()
    pq.write_table(table, path, compression="zstd", compression_level=3, write_statistics=True)
    seconds = time.perf_counter() - started
    size = os.path.getsize(path)
print(f"{'pyarrow ' + pa.__version__ + ' write_table, zstd':<44} {rows / seconds / 1e6:>7.2f} M rows/s"
      f"  {size / seconds / 1e6:>7.1f} MB/s out  {size / 1e6:>6.1f} MB")

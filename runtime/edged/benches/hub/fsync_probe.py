#!/usr/bin/env python3
"""Measures fdatasync latency on the disk that holds the hub's store, beside a benchmark run.

The hub acknowledges what must be on disk only after its commit's fsync, so a disk that stalls
shows in the hub's latency figures; this probe tells a stall of the disk from one of the hub.
It writes 4 KiB and fsyncs every 3 ms for SECONDS (default 40) in DIRECTORY (default the current
one), then prints the count of fsyncs, their p50/p99/p99.9/max in ms and every stall over 30 ms
as (Unix time in ms, ms). Usage: fsync_probe.py [SECONDS] [DIRECTORY]
"""

import os
import sys
import time

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 40.0
directory = sys.argv[2] if len(sys.argv) > 2 else "."
path = os.path.join(directory, "fsync-probe.tmp")
descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
durations = []
stalls = []
started = time.time()
try:
    while time.time() - started < seconds:
        os.pwrite(descriptor, os.urandom(4096), (len(durations) % 256) * 4096)
        before = time.perf_counter()
        os.fdatasync(descriptor)
        took = time.perf_counter() - before
        durations.append(took)
        if took > 0.03:
            stalls.append((int(time.time() * 1000), round(took * 1000)))
        time.sleep(0.003)
finally:
    os.close(descriptor)
    os.unlink(path)
durations.sort()
count = len(durations)


def quantile(q):
    return durations[min(count - 1, int(count * q))] * 1000


print(
    f"{count} fsyncs: p50 {quantile(0.5):.2f} ms, p99 {quantile(0.99):.2f} ms, "
    f"p99.9 {quantile(0.999):.2f} ms, max {durations[-1] * 1000:.1f} ms; stalls over 30 ms: {stalls}"
)

"""The floor under a durable ack: N appends of 1 KiB, each followed by fdatasync.

    python3 bench/fsync_floor.py [FILE] [N]

Prints appends/s and the p50/p99 latency of one append + fdatasync (docs/BENCHMARKS.md).
"""
import os, sys, time, statistics
path = sys.argv[1] if len(sys.argv) > 1 else "/tmp/fsync-floor.dat"
n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
block = b"x" * 1024
lat = []
start = time.perf_counter()
for _ in range(n):
    t = time.perf_counter()
    os.write(fd, block)
    os.fdatasync(fd)
    lat.append(time.perf_counter() - t)
total = time.perf_counter() - start
os.close(fd); os.unlink(path)
lat.sort()
print(f"appends+fdatasync: {n} in {total:.3f} s = {n/total:.0f}/s; p50 {lat[n//2]*1e3:.3f} ms p99 {lat[int(n*0.99)]*1e3:.3f} ms")

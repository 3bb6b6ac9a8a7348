"""The floor under a durable ack: N appends of SIZE bytes, each followed by fdatasync.

    python3 bench/fsync_floor.py [FILE] [N] [SIZE]

Prints appends/s, the p50/p99/p99.9 and longest latency of one append + fdatasync, and
how many took over 3.2 ms (docs/BENCHMARKS.md). Run it beside busy loops to see what a
sync costs a thread that must then wait for a core.
"""
import os, sys, time
path = sys.argv[1] if len(sys.argv) > 1 else "/tmp/fsync-floor.dat"
n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
size = int(sys.argv[3]) if len(sys.argv) > 3 else 1024
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
block = b"x" * size
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
slow = sum(1 for x in lat if x > 0.0032)
print(f"appends+fdatasync: {n} in {total:.3f} s = {n/total:.0f}/s; p50 {lat[n//2]*1e3:.3f} ms "
      f"p99 {lat[int(n*0.99)]*1e3:.3f} ms p99.9 {lat[int(n*0.999)]*1e3:.3f} ms max {lat[-1]*1e3:.2f} ms; "
      f"over 3.2 ms: {slow}")

"""Acquire, refresh and release loops for the Python peers (flufl.lock, filelock), mirroring drover-probe lock-bench
(one lease refresh per hold, as a session's guard refreshes its lock).

Usage: bench_peers.py PEER PATH SECONDS START_EPOCH -> prints one JSON line like drover-probe.
"""
import json
import random
import sys
import time

peer, path, seconds, start = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])

if peer == "flufl.lock":
    from datetime import timedelta
    from flufl.lock import Lock, TimeOutError

    lock = Lock(path, lifetime=timedelta(seconds=30))

    def attempt():
        try:
            lock.lock(timeout=timedelta(seconds=0))
            return True
        except TimeOutError:
            return False

    refresh = lock.refresh
    release = lock.unlock
elif peer == "filelock":
    from filelock import FileLock, Timeout

    lock = FileLock(path)

    def attempt():
        try:
            lock.acquire(timeout=0)
            return True
        except Timeout:
            return False

    refresh = lambda: None  # an flock lock has no lease to refresh
    release = lock.release
else:
    sys.exit(f"unknown peer {peer}")

while time.time() < start:
    time.sleep(0.001)
latencies = []
end = time.monotonic() + seconds
while time.monotonic() < end:
    t0 = time.perf_counter_ns()
    while not attempt():
        time.sleep(random.uniform(0.0002, 0.001))
    refresh()
    release()
    latencies.append(time.perf_counter_ns() - t0)
latencies.sort()
pick = lambda p: latencies[min(len(latencies) - 1, int(len(latencies) * p))] / 1000 if latencies else 0
print(json.dumps({"ops": len(latencies), "seconds": seconds, "p50_us": pick(0.5), "p99_us": pick(0.99)}))

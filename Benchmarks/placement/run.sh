#!/usr/bin/env bash
# Placement with real session starts: three release droverd nodes (127.0.0.1-3) sharing a
# registry, and TOTAL `POST /api/sessions` issued at once, spread over the three nodes. Each start
# runs a real (tiny, C) session command. Prints placement latency p50/p99 from the nodes'
# `placement` diagnostics (`ms=`: reading the nodes, choosing and writing the row; not the
# session's start-up), the whole request's latency, the spread across nodes, and how many sessions
# run twice (by their processes' DROVER_SESSION_ID). Usage: Benchmarks/placement/run.sh [TOTAL] [sqlite|postgresql]
# (Benchmarks/placement/registry-only.sh measures the registry's part alone, without nodes.)
set -euo pipefail
cd "$(dirname "$0")/../.."
total=${1:-1000}
registry=${2:-sqlite}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
for product in droverd; do swift build -c release --product "$product" >/dev/null; done
bin=$(swift build -c release --show-bin-path)
work=$(mktemp -d /tmp/drover-placement.XXXXXX)
cc -O2 -o "$work/tiny-session" Benchmarks/placement/tiny-session.c
pids=()
source scripts/private-postgres.sh
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; stop_private_postgres; rm -rf "$work"; }
trap cleanup EXIT
if [ "$registry" = postgresql ]; then
    start_private_postgres "max_connections = 100" "fsync = off"
    run_pg "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U "$pg_user" drover
    database=$(printf 'provider=postgresql\nhost=127.0.0.1\nport=%s\ndatabase=drover\nusername=%s\npool-size=8\n' "$pg_port" "$pg_user")
else
    database=$(printf 'provider=sqlite\ndirectory=%s\nconnection-timeout-seconds=60\n' "$work/shared")
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
key=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
mkdir -p "$work/shared"
for n in 1 2 3; do
    mkdir -p "$work/node$n"
    printf 'www-address=127.0.0.%s\nwww-port=%s\nserver-data-dir=data\nserver-shared-storage-path=%s\nsession-command=%s\nauth-none=1\n' \
        "$n" "$port" "$work/shared" "$work/tiny-session" > "$work/node$n/rserver.conf"
    printf '%s\n' "$database" > "$work/node$n/database.conf"
    printf 'heartbeat-interval=5\ndiagnostics=tmp\ndiagnostics-file=%s\n' "$work/diag$n.log" > "$work/node$n/load-balancer"
    printf '%s\n' "$key" > "$work/node$n/secure-cookie-key"; chmod 600 "$work/node$n/secure-cookie-key"
    "$bin/droverd" --config-dir "$work/node$n" 2> "$work/node$n.log" & pids+=($!)
    for _ in $(seq 100); do curl -sf "http://127.0.0.$n:$port/health-check" >/dev/null && break; sleep 0.1; done
done
echo "Placement: $total session starts at once through 3 droverd nodes ($registry registry, sessions balancer, a tiny C session command)"
python3 - "$port" "$total" "$work" "$registry" <<'PY'
import collections, glob, os, re, socket, sys, threading, time
port, total, work, registry = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
results = [None] * total
go = threading.Event()
def start(i):
    host = f"127.0.0.{i % 3 + 1}"
    go.wait()
    began = time.perf_counter()
    try:
        s = socket.create_connection((host, port), timeout=300)
        s.sendall(f"POST /api/sessions HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536): data += chunk
        s.close()
        status = int(data.split(b" ", 2)[1])
        node = re.search(rb'"node"\s*:\s*(\d+)', data)
        results[i] = (status, int(node.group(1)) if node else None, (time.perf_counter() - began) * 1000)
    except Exception as error:
        results[i] = (0, None, (time.perf_counter() - began) * 1000)
threads = [threading.Thread(target=start, args=(i,)) for i in range(total)]
for t in threads: t.start()
time.sleep(0.5); began = time.perf_counter(); go.set()
for t in threads: t.join()
wall = time.perf_counter() - began
ok = [r for r in results if r[0] == 201]
failed = collections.Counter(r[0] for r in results if r[0] != 201)
placement = sorted(float(m) for f in glob.glob(f"{work}/diag*.log") for m in re.findall(r"event=placement .*?ms=([0-9.]+)", open(f).read()))
request = sorted(r[2] for r in ok)
pick = lambda xs, q: xs[min(len(xs) - 1, int(len(xs) * q))] if xs else float("nan")
spread = collections.Counter(r[1] for r in ok)
running = collections.Counter()
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        if os.readlink(f"/proc/{pid}/exe").endswith("/tiny-session"):
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            running[next(v[18:] for v in env if v.startswith(b"DROVER_SESSION_ID="))] += 1
    except (OSError, StopIteration):
        pass
print(f"started {len(ok)} of {total} in {wall:.1f} s" + (f" (failed: {dict(failed)})" if failed else ""))
print(f"placement latency (ms= in the diagnostics, {len(placement)} placements): p50 {pick(placement, 0.5):.1f} ms, p99 {pick(placement, 0.99):.1f} ms, max {placement[-1] if placement else float('nan'):.1f} ms")
print(f"whole request (placement + start-up + waiting for the placement lock): p50 {pick(request, 0.5):.0f} ms, p99 {pick(request, 0.99):.0f} ms")
print(f"spread across nodes: {dict(sorted(spread.items()))} (max - min = {max(spread.values()) - min(spread.values()) if spread else 'n/a'})")
print(f"session processes running: {sum(running.values())}; sessions running twice: {sum(1 for c in running.values() if c > 1)}")
PY

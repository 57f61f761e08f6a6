#!/usr/bin/env bash
# Registry at scale: one real droverd node plus N simulated nodes (one process of lightweight
# clients, `drover-probe registry-load`) heartbeating every 5 s for a minute against one private
# PostgreSQL holding S running session rows. Prints heartbeat write latency p50/p99, database CPU
# per heartbeat, and the time of `drover list-nodes` and of GET /load-balancer/status at that size.
# Usage: Benchmarks/registry/run.sh [NODES] [SESSIONS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
nodes=${1:-1000}
sessions=${2:-20000}
seconds=${3:-60}
source scripts/private-postgres.sh
for product in droverd drover drover-probe; do swift build -c release --product "$product" >/dev/null; done
bin=$(swift build -c release --show-bin-path)
work=$(mktemp -d /tmp/drover-registry.XXXXXX)
node_pid=
cleanup() { [ -z "$node_pid" ] || kill "$node_pid" 2>/dev/null || true; wait 2>/dev/null || true; stop_private_postgres; rm -rf "$work"; }
trap cleanup EXIT
start_private_postgres "max_connections = 100" "shared_buffers = 128MB"
run_pg "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U "$pg_user" drover
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/node" "$work/sims"
printf 'www-address=127.0.0.1\nwww-port=%s\nserver-data-dir=data\nserver-shared-storage-path=%s\nauth-none=1\n' "$port" "$work/shared" \
    | tee "$work/node/rserver.conf" > "$work/sims/rserver.conf"
printf 'provider=postgresql\nhost=127.0.0.1\nport=%s\ndatabase=drover\nusername=%s\npool-size=%s\n' "$pg_port" "$pg_user" 4 > "$work/node/database.conf"
printf 'provider=postgresql\nhost=127.0.0.1\nport=%s\ndatabase=drover\nusername=%s\npool-size=%s\n' "$pg_port" "$pg_user" 32 > "$work/sims/database.conf"
printf 'heartbeat-interval=5\n' | tee "$work/node/load-balancer" > "$work/sims/load-balancer"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/node/secure-cookie-key"
chmod 600 "$work/node/secure-cookie-key"
"$bin/droverd" --config-dir "$work/node" 2> "$work/node.log" & node_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health-check" >/dev/null && break; sleep 0.1; done
echo "Registry: 1 droverd node + $nodes simulated nodes heartbeating every 5 s for $seconds s, $sessions running sessions, PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}')"
"$bin/drover-probe" registry-load --config-dir "$work/sims" --nodes "$nodes" --sessions "$sessions" --seconds "$seconds" --db-pid "$pg_pid"
python3 - "$bin/drover" "$work/node" "$port" <<'PY'
import statistics, subprocess, sys, time, urllib.request
drover, config, port = sys.argv[1:4]
def timed(action, runs=5):
    times = []
    for _ in range(runs):
        started = time.perf_counter(); size = action(); times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times), size
def list_nodes():
    out = subprocess.run([drover, "list-nodes", "--config-dir", config], capture_output=True, text=True, check=True).stdout
    return len(out.splitlines())
def status():
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/load-balancer/status", timeout=30) as r:
        return len(r.read().decode().splitlines())
for name, action in (("drover list-nodes", list_nodes), ("GET /load-balancer/status", status)):
    median, worst, lines = timed(action)
    print(f"{name}: median {median:.0f} ms, max {worst:.0f} ms ({lines} lines)")
PY

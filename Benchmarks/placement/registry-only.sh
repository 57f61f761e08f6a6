#!/usr/bin/env bash
# Placement: N placements issued at once from three processes (standing in for three nodes)
# through the sessions balancer and one registry. Measures placement latency (the serialised
# choice and the row insert; not the session command's start-up), the spread across nodes,
# and sessions placed twice. Usage: Benchmarks/placement/registry-only.sh [TOTAL] [sqlite|POSTGRES_URI]
set -euo pipefail
cd "$(dirname "$0")/../.."
total=${1:-1000}
registry=${2:-sqlite}
swift build -c release --product drover-probe >/dev/null
bin=$(swift build -c release --show-bin-path)
work=$(mktemp -d /tmp/drover-placement.XXXXXX)
trap 'rm -rf "$work"' EXIT
printf 'server-data-dir=data\nserver-shared-storage-path=shared\n' > "$work/rserver.conf"
printf 'heartbeat-interval=3600\n' > "$work/load-balancer"
if [ "$registry" = sqlite ]; then
    printf 'provider=sqlite\nconnection-timeout-seconds=60\npool-size=8\n' > "$work/database.conf"
else
    printf 'provider=postgresql\nconnection-uri=%s\npool-size=8\n' "$registry" > "$work/database.conf"
fi
"$bin/drover-probe" place --config-dir "$work" --count 0 >/dev/null  # creates the schema
if [ "$registry" = sqlite ]; then
    python3 -c "
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1]); now = time.time()
for n in (1, 2, 3):
    db.execute(\"INSERT INTO node (host, ipv4, port, status, last_seen, cpus, started_at, version, config_hash) VALUES (?, ?, 8787, 'Online', ?, 2, ?, 'bench', 'h')\", (f'127.0.0.{n}', f'127.0.0.{n}', now, now))
db.commit()" "$work/data/drover.sqlite"
else
    psql "$registry" -qc "INSERT INTO node (host, ipv4, port, status, last_seen, cpus, started_at, version, config_hash) SELECT '127.0.0.'||n, '127.0.0.'||n, 8787, 'Online', now(), 2, now(), 'bench', 'h' FROM generate_series(1,3) n"
fi
start=$(( $(date +%s) + 2 ))
per=$(( total / 3 ))
for p in 1 2 3; do
    "$bin/drover-probe" place --config-dir "$work" --count "$per" --at "$start" --latencies "$work/lat$p" > "$work/out$p" &
done
wait
python3 - "$work" "$registry" "$per" <<'PY'
import sys, statistics
work, registry, per = sys.argv[1], sys.argv[2], int(sys.argv[3])
lat = sorted(float(x) for p in (1, 2, 3) for x in open(f"{work}/lat{p}").read().split())
pick = lambda q: lat[min(len(lat) - 1, int(len(lat) * q))]
if registry == "sqlite":
    import sqlite3
    db = sqlite3.connect(f"{work}/data/drover.sqlite")
    spread = dict(db.execute("select node_id, count(*) from session group by node_id").fetchall())
    twice = db.execute("select count(*) from (select id from session group by id having count(*) > 1)").fetchone()[0]
else:
    import subprocess
    out = subprocess.run(["psql", registry, "-Atc", "select node_id, count(*) from session group by node_id"], capture_output=True, text=True).stdout
    spread = {int(a): int(b) for a, b in (l.split("|") for l in out.split())}
    twice = int(subprocess.run(["psql", registry, "-Atc", "select count(*) from (select id from session group by id having count(*) > 1) t"], capture_output=True, text=True).stdout)
print(f"Placement ({registry if registry == 'sqlite' else 'postgresql'}): {len(lat)} placements from 3 processes at once")
print(f"latency p50 {pick(0.5):.1f} ms, p99 {pick(0.99):.1f} ms, max {lat[-1]:.1f} ms")
print(f"spread across nodes: {dict(sorted(spread.items()))} (max - min = {max(spread.values()) - min(spread.values())})")
print(f"sessions placed twice: {twice}")
PY

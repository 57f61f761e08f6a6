#!/usr/bin/env bash
# Failover: SIGKILL (or, with MODE=pause, SIGSTOP) the droverd of one of three nodes and measure
# the time until every surviving peer shows it (unreachable) on /load-balancer/status, and until
# each of its sessions answers again through a surviving node. refresh-rate is two thirds of
# the lock timeout, as in the defaults (20/30).
# Usage: [MODE=kill|pause] Benchmarks/failover/run.sh [HEARTBEAT_S] [LOCK_TIMEOUT_S] [SESSIONS]
set -euo pipefail
cd "$(dirname "$0")/../.."
heartbeat=${1:-5}
lock_timeout=${2:-30}
sessions=${3:-9}
mode=${MODE:-kill}
for product in droverd drover-demo-session drover-session-guard; do swift build -c release --product $product >/dev/null; done
bin=$(swift build -c release --show-bin-path)
work=$(mktemp -d /tmp/drover-failover.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
key=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/shared"
for n in 1 2 3; do
    mkdir -p "$work/node$n"
    printf 'www-address=127.0.0.%s\nwww-port=%s\nserver-data-dir=data\nserver-shared-storage-path=%s\nsession-command=%s\nauth-none=1\n' \
        "$n" "$port" "$work/shared" "$bin/drover-demo-session" > "$work/node$n/rserver.conf"
    printf 'provider=sqlite\ndirectory=%s\n' "$work/shared" > "$work/node$n/database.conf"
    printf 'heartbeat-interval=%s\n' "$heartbeat" > "$work/node$n/load-balancer"
    printf 'refresh-rate=%s\ntimeout-interval=%s\n' "$(( lock_timeout * 2 / 3 > 0 ? lock_timeout * 2 / 3 : 1 ))" "$lock_timeout" > "$work/node$n/file-locks"
    printf '%s\n' "$key" > "$work/node$n/secure-cookie-key"; chmod 600 "$work/node$n/secure-cookie-key"
    "$bin/droverd" --config-dir "$work/node$n" 2> "$work/node$n.log" & pids+=($!)
    for _ in $(seq 100); do curl -sf "http://127.0.0.$n:$port/health-check" >/dev/null && break; sleep 0.1; done
done
for _ in $(seq "$sessions"); do curl -sf -X POST "http://127.0.0.1:$port/api/sessions" >/dev/null; done
victim=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(\"select id from node where host='127.0.0.3'\").fetchone()[0])" "$work/shared/drover.sqlite")
ids=$(python3 -c "import sqlite3,sys; print(' '.join(r[0] for r in sqlite3.connect(sys.argv[1]).execute('select id from session where node_id=?',(int(sys.argv[2]),))))" "$work/shared/drover.sqlite" "$victim")
echo "Failover ($mode): 3 nodes, heartbeat-interval=${heartbeat}s, lock timeout-interval=${lock_timeout}s, $sessions sessions ($(wc -w <<<"$ids") on 127.0.0.3, whose droverd is hit)"
python3 - "$port" "${pids[2]}" "$mode" $ids <<'PY'
import os, signal, sys, time, urllib.request
port, victim_pid, mode, ids = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r: return r.status, r.read().decode()
    except Exception as e: return getattr(e, "code", 0), ""
t0 = time.monotonic()
os.kill(victim_pid, signal.SIGKILL if mode == "kill" else signal.SIGSTOP)
seen = {}
while len(seen) < 2:
    for peer in ("127.0.0.1", "127.0.0.2"):
        if peer not in seen and f"127.0.0.3:{port} (unreachable)" in get(f"http://{peer}:{port}/load-balancer/status")[1]:
            seen[peer] = time.monotonic() - t0
    time.sleep(0.05)
print(f"unreachable on every peer after {max(seen.values()):.2f} s (" + ", ".join(f"{p}: {t:.2f} s" for p, t in sorted(seen.items())) + ")")
back = {}
while len(back) < len(ids):
    for sid in ids:
        if sid not in back and get(f"http://127.0.0.1:{port}/s/{sid}/count")[0] == 200:
            back[sid] = time.monotonic() - t0
    time.sleep(0.05)
times = sorted(back.values())
if times:
    print(f"its {len(times)} sessions answering again: first {times[0]:.2f} s, median {times[len(times)//2]:.2f} s, last {times[-1]:.2f} s after the {mode}")
if mode == "pause": os.kill(victim_pid, signal.SIGCONT)
PY

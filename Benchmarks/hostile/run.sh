#!/usr/bin/env bash
# A legitimate user's throughput and p99 latency through a Drover node, quiet and then under a
# hostile load, side by side (issue 16's benchmark): 1,000 slowloris connections trickling a
# header line every 2 s, 400 connections from one address whose heads promise a body that never
# comes (issue 34), requests announcing 100 MB bodies, bad-password sign-ins from 50
# loopback addresses, and status-endpoint requests from an address it refuses. RATE=N paces the
# three request floods at N requests per second each (default 200); RATE=0 sends them as fast as
# the attacker can (on a 2-core machine the attacker's own CPU then competes with wrk and droverd). Everything on loopback, bounded in time. The user signs in with a real cookie
# (PAM, service `login`) and reads a demo session's counter with wrk.
# Usage: [RATE=N] [ROUNDS=N] Benchmarks/hostile/run.sh [SECONDS] [CONNECTIONS]
# Target: under attack at least 0.8 x the quiet throughput and at most 2 x the quiet p99.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-15}
connections=${2:-16}
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null; }
for product in droverd drover-session-guard drover-demo-session drover-probe; do swift build -c release --product $product >/dev/null; done
bin=$(swift build -c release --show-bin-path)

work=$(mktemp -d /tmp/drover-hostile.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/node/shared"
cat > "$work/node/rserver.conf" <<CONF
www-address=127.0.0.1
www-port=$port
server-data-dir=data
server-shared-storage-path=shared
session-command=$bin/drover-demo-session
auth-pam-service=login
CONF
printf 'provider=sqlite\ndirectory=%s\n' "$work/node/shared" > "$work/node/database.conf"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/node/secure-cookie-key"
chmod 600 "$work/node/secure-cookie-key"
"$bin/droverd" --config-dir "$work/node" 2> "$work/node.log" & node=$!
attack=""
cleanup() { [ -n "$attack" ] && kill $attack 2>/dev/null; kill $node 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/health-check" >/dev/null && break; sleep 0.2; done
{ read -r cookie; read -r csrf; } < <("$bin/drover-probe" cookie --config-dir "$work/node" --user "$(id -un)")
id=$(curl -sf -X POST -H "Cookie: drover-auth=$cookie" -H "X-CSRF-Token: $csrf" "http://127.0.0.1:$port/api/sessions" \
     | python3 -c 'import sys,json; print(json.load(sys.stdin)["id"])')
url="http://127.0.0.1:$port/s/$id/count"
curl -sf -H "Cookie: drover-auth=$cookie" "$url" >/dev/null

cpu() { # pid -> CPU seconds used so far (user + system); 0 once it has gone, or for no pid
    [ -n "$1" ] && awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0
}

since() { # before pid -> CPU seconds the process used since `before`
    awk -v a="$(cpu "$2")" -v b="$1" 'BEGIN {print a - b}'
}

measure() { # [attacker pid] -> "requests/s p99_ms droverd_cpu_s attacker_cpu_s"
    local attacker=${1:-} out before attacker_before
    before=$(cpu $node); attacker_before=$(cpu "$attacker")
    out=$(wrk -t1 -c"$connections" -d"${seconds}s" --latency -H "Cookie: drover-auth=$cookie" "$url")
    local rps p99
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; print v}' <<<"$out")
    echo "$rps $p99 $(since "$before" $node) $(since "$attacker_before" "$attacker")"
}

cat > "$work/attack.py" <<'PY'
import asyncio, os, resource, sys, time
host, port, seconds, rate = "127.0.0.1", int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
def pause(workers):  # each of `workers` tasks waits this long between requests
    return workers / rate if rate > 0 else 0
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
end = time.monotonic() + seconds
counts = {"slow closed": 0, "413": 0, "sign-in 303": 0, "sign-in 429": 0, "status 403": 0, "stalled held": 0, "stalled refused": 0, "other": 0}
async def slowloris():
    while time.monotonic() < end:
        try:
            r, w = await asyncio.open_connection(host, port)
            w.write(b"GET / HTTP/1.1\r\nHost: node\r\n")
            await w.drain()
            while time.monotonic() < end:
                await asyncio.sleep(2)
                w.write(b"X-Slow: 1\r\n")
                await w.drain()
        except (ConnectionError, OSError):
            counts["slow closed"] += 1
async def request(raw, source="127.0.0.1"):
    r, w = await asyncio.open_connection(host, port, local_addr=(source, 0))
    w.write(raw)
    await w.drain()
    head = await asyncio.wait_for(r.readline(), 10)
    w.close()
    return head
async def oversized():
    while time.monotonic() < end:
        try:
            head = await request(b"POST /api/sessions HTTP/1.1\r\nHost: node\r\nContent-Length: 104857600\r\n\r\n" + b"a" * 16384)
            counts["413" if b" 413 " in head else "other"] += 1
        except Exception:
            counts["other"] += 1
        await asyncio.sleep(pause(2))
async def bad_passwords(n):
    source = "127.0.1.%d" % (n + 1)
    while time.monotonic() < end:
        body = b"username=nobody%d&password=wrong" % n
        try:
            head = await request(b"POST /sign-in HTTP/1.1\r\nHost: node\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                                 b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body), source)
            counts["sign-in 429" if b" 429 " in head else "sign-in 303" if b" 303 " in head else "other"] += 1
        except Exception:
            counts["other"] += 1
        await asyncio.sleep(pause(50))
async def status_flood():
    while time.monotonic() < end:
        try:
            head = await request(b"GET /load-balancer/status HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n", "127.0.0.9")
            counts["status 403" if b" 403 " in head else "other"] += 1
        except Exception:
            counts["other"] += 1
        await asyncio.sleep(pause(2))
async def stalled_body():
    # A head promising a body that never comes, from one address (issue 34): held until
    # www-body-timeout, and no more of them than www-max-connections-per-address.
    while time.monotonic() < end:
        try:
            r, w = await asyncio.open_connection(host, port, local_addr=("127.0.3.1", 0))
            w.write(b"POST /api/sessions HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
            await w.drain()
            first = await asyncio.wait_for(r.read(64), max(0.1, end - time.monotonic()))
            counts["stalled refused" if b" 503 " in first else "stalled held"] += 1
            w.close()
            if b" 503 " in first: await asyncio.sleep(0.5)
        except asyncio.TimeoutError:
            counts["stalled held"] += 1
        except (ConnectionError, OSError):
            counts["other"] += 1
            await asyncio.sleep(0.5)
async def main():
    tasks = [asyncio.create_task(slowloris()) for _ in range(1000)]
    tasks += [asyncio.create_task(stalled_body()) for _ in range(400)]
    tasks += [asyncio.create_task(oversized()) for _ in range(2)]
    tasks += [asyncio.create_task(bad_passwords(n)) for n in range(50)]
    tasks += [asyncio.create_task(status_flood()) for _ in range(2)]
    await asyncio.gather(*tasks, return_exceptions=True)
    print(" ".join("%s=%d" % kv for kv in counts.items()), flush=True)
asyncio.run(main())
PY

# Quiet and attacked runs alternate ROUNDS times (default 3); medians are reported, since single
# runs on a 2-core machine vary by a third.
rounds=${ROUNDS:-3}
: > "$work/results"
for round in $(seq "$rounds"); do
    read -r quiet_rps quiet_p99 quiet_cpu _ < <(measure)
    python3 "$work/attack.py" "$port" "$((seconds + 10))" "${RATE:-200}" > "$work/attack.out" 2>&1 & attack=$!
    sleep 5
    read -r hostile_rps hostile_p99 hostile_cpu attacker_cpu < <(measure $attack)
    wait $attack || true
    attack=""
    echo "$quiet_rps $quiet_p99 $hostile_rps $hostile_p99" >> "$work/results"
    printf 'round %d: quiet %10s req/s p99 %6s ms | under attack %10s req/s p99 %6s ms | attack: %s\n' \
        "$round" "$quiet_rps" "$quiet_p99" "$hostile_rps" "$hostile_p99" "$(cat "$work/attack.out")"
    # Where the CPU went: droverd's seconds in each run (of the CPUs x SECONDS the machine has), and
    # the attacker's own, which a remote attacker would not take from this machine.
    printf '         CPU-s of %d: droverd quiet %.1f, under attack %.1f; attacker %.1f\n' \
        "$(( $(nproc) * seconds ))" "$quiet_cpu" "$hostile_cpu" "$attacker_cpu"
done
python3 - "$work/results" <<'PY'
import statistics, sys
rows = [list(map(float, line.split())) for line in open(sys.argv[1]) if line.strip()]
q, qp, h, hp = (statistics.median(column) for column in zip(*rows))
print("medians of %d rounds: quiet %.0f req/s, p99 %.2f ms; under attack %.0f req/s, p99 %.2f ms" % (len(rows), q, qp, h, hp))
ratios = [(r[2] / r[0], r[3] / r[1]) for r in rows]
print("per round: " + ", ".join("%.2f x / %.2f x" % r for r in ratios))
print("throughput under attack: %.2f x quiet (target >= 0.8); p99 under attack: %.2f x quiet (target <= 2)"
      % (statistics.median(r[0] for r in ratios), statistics.median(r[1] for r in ratios)))
PY
echo "droverd open files at the end: $(ls /proc/$node/fd | wc -l)"

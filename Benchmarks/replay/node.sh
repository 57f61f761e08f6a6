#!/usr/bin/env bash
# Session-hop openings on a node (issue 34, item 4's benchmark): two nodes, one demo session on
# the first; a client signed in sends requests for it through the second node, each with
# `Connection: close`, so every request makes the second node open a hop to the owner — one
# signed opening whose nonce the owner must remember. Prints the openings per second the owner
# accepted over SECONDS, the requests per second in all, and the owner's CPU seconds per 10,000
# requests, for each build given (the binaries of `swift build -c release`): run it with the
# build before and after a change. One user: since issue 34 the owner keeps at most 20,000 of one
# user's openings in two minutes and refuses the rest (503), so runs longer than that share lasts
# show the refusals' cost.
# Usage: Benchmarks/replay/node.sh SECONDS BIN_DIR [BIN_DIR …]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=$1; shift
for bin in "$@"; do
    work=$(mktemp -d /tmp/drover-replay-node.XXXXXX)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    key=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    pids=()
    mkdir -p "$work/shared"
    for n in 1 2; do
        mkdir -p "$work/node$n"
        printf 'www-address=127.0.0.%s\nwww-port=%s\nserver-data-dir=data\nserver-shared-storage-path=%s\nsession-command=%s\nauth-none=1\n' \
            "$n" "$port" "$work/shared" "$bin/drover-demo-session" > "$work/node$n/rserver.conf"
        printf 'provider=sqlite\ndirectory=%s\n' "$work/shared" > "$work/node$n/database.conf"
        : > "$work/node$n/load-balancer"
        printf '%s\n' "$key" > "$work/node$n/secure-cookie-key"; chmod 600 "$work/node$n/secure-cookie-key"
        "$bin/droverd" --config-dir "$work/node$n" 2> "$work/node$n.log" & pids+=($!)
        for _ in $(seq 100); do curl -sf "http://127.0.0.$n:$port/health-check" >/dev/null && break; sleep 0.1; done
    done
    # A session on node 1, reached through node 2.
    owner=0
    for _ in $(seq 20); do
        created=$(curl -sf -X POST "http://127.0.0.1:$port/api/sessions")
        owner=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["node"])' "$created")
        id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["id"])' "$created")
        [ "$owner" = 1 ] && break
    done
    owner_pid=${pids[0]}
    cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
    before=$(cpu "$owner_pid")
    result=$(python3 - "$port" "$id" "$seconds" <<'PY'
import socket, sys, threading, time
port, sid, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
request = ("GET /s/%s/count HTTP/1.1\r\nHost: 127.0.0.2:%d\r\nConnection: close\r\n\r\n" % (sid, port)).encode()
end = time.monotonic() + seconds
counts = {"ok": 0, "other": 0}
lock = threading.Lock()
def worker():
    while time.monotonic() < end:
        try:
            s = socket.create_connection(("127.0.0.2", port), timeout=10)
            s.sendall(request)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk: break
                data += chunk
            s.close()
            with lock: counts["ok" if data.startswith(b"HTTP/1.1 200") else "other"] += 1
        except OSError:
            with lock: counts["other"] += 1
threads = [threading.Thread(target=worker) for _ in range(16)]
for t in threads: t.start()
for t in threads: t.join()
print(counts["ok"], counts["other"])
PY
)
    used=$(awk -v a="$(cpu "$owner_pid")" -v b="$before" 'BEGIN {print a - b}')
    read -r ok other <<<"$result"
    total=$((ok + other))
    printf '%-52s %7.0f openings/s accepted, %7.0f requests/s in all; owner CPU-s per 10k requests %6.3f (%d answered 200, %d refused)\n' "$bin" \
        "$(awk -v n="$ok" -v s="$seconds" 'BEGIN {print n / s}')" "$(awk -v n="$total" -v s="$seconds" 'BEGIN {print n / s}')" \
        "$(awk -v c="$used" -v n="$total" 'BEGIN {print n ? c / n * 10000 : 0}')" "$ok" "$other"
    kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true
    rm -rf "$work"
done

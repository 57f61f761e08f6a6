#!/usr/bin/env bash
# Instructions per proxied request, a figure free of the machine's noise: one Drover node
# (auth-none, release build) and nginx (one process), each run under valgrind's callgrind, each
# proxying the same demo session's `GET /s/<id>/count`; REQUESTS requests on CONNECTIONS
# keep-alive connections after a warm-up, counted from a zeroed profile. Prints instructions per
# request for both, their ratio, and where droverd's instructions go (by component and the
# costliest functions). User-space instructions only: the kernel's share (reads, writes, epoll)
# is not in callgrind's count.
# AUTH=cookie: the node uses PAM sign-in and every request carries a signed sign-in cookie.
# ORIGINS=1 (with auth-none): sessions at their own origins (`www-session-domain=localhost`), and
# the node's requests carry `Host: <id>.localhost:PORT` (nginx ignores the name).
# Usage: [AUTH=cookie] [BIN=DIR] Benchmarks/proxy/instructions.sh [REQUESTS=5000] [CONNECTIONS=8]
set -euo pipefail
cd "$(dirname "$0")/../.."
requests=${1:-5000}
connections=${2:-8}
for tool in nginx valgrind; do
    command -v $tool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light valgrind >/dev/null; break; }
done
# BIN=DIR: the release binaries of DIR instead of this checkout's (to compare two builds).
if [ -z "${BIN:-}" ]; then
    for product in droverd drover-session-guard drover-demo-session drover-probe; do swift build -c release --product $product >/dev/null; done
fi
bin=$(cd "${BIN:-$(swift build -c release --show-bin-path)}" && pwd)  # absolute: the session command runs elsewhere

work=$(mktemp -d /tmp/drover-instructions.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
nginx_port=$(free_port)
mkdir -p "$work/node" "$work/shared"
cat > "$work/node/rserver.conf" <<CONF
www-address=127.0.0.1
www-port=$port
server-data-dir=data
server-shared-storage-path=$work/shared
session-command=$bin/drover-demo-session
$([ "${AUTH:-none}" = cookie ] && echo "auth-pam-service=login" || echo "auth-none=1")
$([ "${ORIGINS:-0}" = 1 ] && echo "www-session-domain=localhost")
CONF
printf 'provider=sqlite\ndirectory=%s\n' "$work/shared" > "$work/node/database.conf"
: > "$work/node/load-balancer"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/node/secure-cookie-key"
chmod 600 "$work/node/secure-cookie-key"

# --fair-sched: valgrind runs one thread at a time; droverd's alive ticker must still get its
# turn, or the session's guard would end the session as droverd-silent.
# valgrind 3.19 cannot read the DWARF 5 of Swift's toolchain: droverd runs from a copy without
# debug information (its symbol table, which names the functions, stays), beside its session
# guard as droverd expects.
mkdir "$work/bin"
objcopy --strip-debug "$bin/droverd" "$work/bin/droverd"
ln -s "$bin/drover-session-guard" "$work/bin/drover-session-guard"
cc -O2 -shared -fPIC Benchmarks/proxy/sigsuspend-shim.c -o "$work/sigsuspend-shim.so"
LD_PRELOAD="$work/sigsuspend-shim.so" valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file="$work/droverd.cg" \
    "$work/bin/droverd" --config-dir "$work/node" 2> "$work/droverd.log" & droverd=$!
cleanup() {
    kill $droverd 2>/dev/null || true
    [ -n "${nginx:-}" ] && kill $nginx 2>/dev/null || true
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/health-check" >/dev/null && break; sleep 0.2; done
cookie=""
sign_in=()
if [ "${AUTH:-none}" = cookie ]; then
    { read -r cookie; read -r csrf; } < <("$bin/drover-probe" cookie --config-dir "$work/node" --user "$(id -un)")
    sign_in=(-H "Cookie: drover-auth=$cookie" -H "X-CSRF-Token: $csrf")
fi
id=$(curl -sf -X POST "${sign_in[@]}" "http://127.0.0.1:$port/api/sessions" | python3 -c 'import sys,json; print(json.load(sys.stdin)["id"])')
session_socket="$work/node/data/sessions/$id.sock"
source Benchmarks/proxy/nginx-conf.sh
nginx_conf "$work" "$nginx_port" "$session_socket" foreground > "$work/nginx.conf"
valgrind --tool=callgrind --callgrind-out-file="$work/nginx.cg" nginx -c "$work/nginx.conf" 2> "$work/nginx-valgrind.log" & nginx=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$nginx_port/s/$id/count" >/dev/null && break; sleep 0.2; done

load() { # port count
    python3 - "$1" "$2" "$connections" "/s/$id/count" "$cookie" "$([ "${ORIGINS:-0}" = 1 ] && echo "$id.localhost:$port")" <<'PY'
import http.client, sys, threading
port, count, connections, path, cookie, host = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
headers = {"Cookie": "drover-auth=" + cookie} if cookie else {}
if host: headers["Host"] = host
failures = []
def client(n):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(n):
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            failures.append(response.status)
threads = [threading.Thread(target=client, args=(count // connections,)) for _ in range(connections)]
for t in threads: t.start()
for t in threads: t.join()
if failures:
    sys.exit(f"{len(failures)} requests failed: {sorted(set(failures))}")
PY
}

measure() { # name pid port -> prints the summary
    local name=$1 pid=$2 port=$3
    load "$port" 400
    callgrind_control -z "$pid" >/dev/null
    load "$port" "$requests"
    callgrind_control -d "$pid" >/dev/null
    local dump
    dump=$(ls -t "$work/$name.cg".* | head -1)
    echo "$name:"
    python3 Benchmarks/proxy/callgrind_summary.py "$dump" "$(( requests / connections * connections ))" 15 | tee "$work/$name.summary"
}

echo "Instructions per proxied request: GET /s/<id>/count, $requests requests on $connections keep-alive connections, under callgrind"
measure nginx $nginx "$nginx_port"
measure droverd $droverd "$port"
python3 - "$work/droverd.summary" "$work/nginx.summary" <<'PY'
import re, sys
def per_request(path):
    return float(re.search(r"([\d,]+) instructions per request", open(path).read()).group(1).replace(",", ""))
d, n = per_request(sys.argv[1]), per_request(sys.argv[2])
print(f"ratio: droverd / nginx instructions per request = {d / n:.2f}x")
PY

#!/usr/bin/env bash
# Proxy throughput and latency: wrk against one demo session directly, through its owning
# Drover node, through a non-owning node, and through nginx as a reverse proxy to it, all in
# one run; then 1,000 WebSockets held through a node and the node's resident memory.
# Usage: Benchmarks/proxy/run.sh [SECONDS] [CONNECTIONS]
# AUTH=cookie: the nodes use PAM sign-in (not auth-none) and every request carries a signed
# sign-in cookie, as in production (the WebSocket part is skipped).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-10}
connections=${2:-64}
for tool in wrk nginx; do
    command -v $tool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null; break; }
done
# droverd starts every session through drover-session-guard, found beside it.
for product in droverd drover-session-guard drover-demo-session; do swift build -c release --product $product >/dev/null; done
auth=${AUTH:-none}
[ "$auth" = cookie ] && swift build -c release --product drover-probe >/dev/null
bin=$(swift build -c release --show-bin-path)

work=$(mktemp -d /tmp/drover-proxybench.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
mkdir -p "$work/shared"
key=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
for n in 1 2; do
    mkdir -p "$work/node$n"
    cat > "$work/node$n/rserver.conf" <<CONF
www-address=127.0.0.$n
www-port=$port
server-data-dir=data
server-shared-storage-path=$work/shared
session-command=$bin/drover-demo-session
$([ "$auth" = cookie ] && echo "auth-pam-service=login" || echo "auth-none=1")
CONF
    printf 'provider=sqlite\ndirectory=%s\n' "$work/shared" > "$work/node$n/database.conf"
    : > "$work/node$n/load-balancer"
    printf '%s\n' "$key" > "$work/node$n/secure-cookie-key"
    chmod 600 "$work/node$n/secure-cookie-key"
done
"$bin/droverd" --config-dir "$work/node1" 2> "$work/node1.log" & node1=$!
sleep 1
"$bin/droverd" --config-dir "$work/node2" 2> "$work/node2.log" & node2=$!
cleanup() { kill $node1 $node2 2>/dev/null || true; nginx -c "$work/nginx.conf" -s stop 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/health-check" >/dev/null && curl -sf "http://127.0.0.2:$port/health-check" >/dev/null && break; sleep 0.2; done

sign_in=()
if [ "$auth" = cookie ]; then
    { read -r cookie; read -r csrf; } < <("$bin/drover-probe" cookie --config-dir "$work/node1" --user "$(id -un)")
    sign_in=(-H "Cookie: drover-auth=$cookie")
fi
id=$(curl -sf -X POST "${sign_in[@]}" ${csrf:+-H "X-CSRF-Token: $csrf"} "http://127.0.0.1:$port/api/sessions" | python3 -c 'import sys,json; print(json.load(sys.stdin)["id"])')
owner=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select n.host from session s join node n on n.id=s.node_id where s.id=?',(sys.argv[2],)).fetchone()[0])" "$work/shared/drover.sqlite" "$id")
other=127.0.0.2; owner_dir=node1; [ "$owner" = 127.0.0.2 ] && { other=127.0.0.1; owner_dir=node2; }
# The session listens only on its Unix socket, in a folder only droverd's user (root here) can
# enter: nginx's worker runs as root too to reach it.
session_socket="$work/$owner_dir/data/sessions/$id.sock"
nginx_port=$(free_port)
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
user root;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    upstream session { server unix:$session_socket; keepalive 64; }
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            proxy_pass http://session;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$remote_addr;
        }
    }
}
CONF
nginx -c "$work/nginx.conf"
path="/s/$id/count"
curl -sf "http://127.0.0.1:$nginx_port$path" >/dev/null
curl -sf "${sign_in[@]}" "http://$owner:$port$path" >/dev/null

echo "Proxy benchmark: wrk -t2 -c$connections -d${seconds}s --latency GET $path (keep-alive), $(nproc) cores, auth=$auth"
declare -A rps p50 p99
run() { # name url
    local out
    out=$(wrk -t2 -c"$connections" -d"${seconds}s" --latency "${sign_in[@]}" "$2")
    rps[$1]=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50[$1]=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99[$1]=$(awk '$1=="99%" {print $2}' <<<"$out")
    printf '%-18s %12s req/s   p50 %-9s p99 %s\n' "$1" "${rps[$1]}" "${p50[$1]}" "${p99[$1]}"
}
if [ "${SKIP_WRK:-0}" = 1 ]; then
    python3 Benchmarks/proxy/websockets.py "$owner" "$port" "/s/$id/echo" "$(pgrep -f "droverd --config-dir $work/node$([ "$owner" = 127.0.0.1 ] && echo 1 || echo 2)")" 1000 3
    exit 0
fi
# No "direct" run: the session listens only on its Unix socket, which wrk cannot reach.
run nginx "http://127.0.0.1:$nginx_port$path"
run owning-node "http://$owner:$port$path"
run non-owning-node "http://$other:$port$path"
python3 - "${rps[owning-node]}" "${rps[nginx]}" "${p99[owning-node]}" "${p99[nginx]}" "${rps[non-owning-node]}" <<'PY'
import sys, re
def ms(t):
    m = re.match(r"([\d.]+)(us|ms|s)", t); v = float(m.group(1))
    return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v
own, ng, p99o, p99n, other = float(sys.argv[1]), float(sys.argv[2]), ms(sys.argv[3]), ms(sys.argv[4]), float(sys.argv[5])
print(f"ratios: owning node / nginx throughput = {own/ng:.2f}x (target >= 0.80), p99 = {p99o/p99n:.2f}x (target <= 1.50); "
      f"non-owning node / nginx throughput = {other/ng:.2f}x")
PY
[ "$auth" = cookie ] && exit 0
echo
python3 Benchmarks/proxy/websockets.py "$owner" "$port" "/s/$id/echo" "$(pgrep -f "droverd --config-dir $work/node$([ "$owner" = 127.0.0.1 ] && echo 1 || echo 2)")" 1000 3

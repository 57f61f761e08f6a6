#!/usr/bin/env bash
# Bulk transfers through the proxy (issue 39's "Bulk" target): a download and an upload of MB
# megabytes through the owning node, through a non-owning node, and through nginx as a reverse
# proxy to the same session (streaming both ways: proxy_buffering and proxy_request_buffering
# off, 64 KiB reads), alternating over ROUNDS rounds; throughput in MB/s, and how far the proxy's
# peak resident memory (VmHWM, reset before each transfer) rose above what it held before.
# The session is a small Python HTTP server on the session's socket (a session program of the
# default kind): GET <base>bulk?mb=N sends N MiB, POST <base>sink reads the body and answers its
# length. Usage: [BIN=DIR] Benchmarks/proxy/bulk.sh [MB=200] [ROUNDS=3]
set -euo pipefail
cd "$(dirname "$0")/../.."
mb=${1:-200}
rounds=${2:-3}
command -v nginx >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; }
if [ -z "${BIN:-}" ]; then
    for product in droverd drover-session-guard; do swift build -c release --product $product >/dev/null; done
fi
bin=$(cd "${BIN:-$(swift build -c release --show-bin-path)}" && pwd)

work=$(mktemp -d /tmp/drover-bulkbench.XXXXXX)
chmod 755 "$work"
cat > "$work/bulk-session.py" <<'PY'
import os, socket, socketserver
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlparse, parse_qs
base = os.environ.get("DROVER_SESSION_BASE_PATH", "/")
if not base.endswith("/"): base += "/"
listener = socket.socket(fileno=int(os.environ["DROVER_SESSION_LISTEN_FD"]))
CHUNK = b"\0" * (1 << 20)
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def address_string(self): return "drover"
    def log_message(self, *args): pass
    def do_GET(self):
        url = urlparse(self.path)
        if url.path != base + "bulk":
            self.send_error(404); return
        n = int(parse_qs(url.query).get("mb", ["1"])[0])
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n << 20))
        self.end_headers()
        for _ in range(n): self.wfile.write(CHUNK)
    def do_POST(self):
        left = int(self.headers.get("Content-Length", "0"))
        got = 0
        while left > 0:
            piece = self.rfile.read(min(left, 1 << 20))
            if not piece: break
            got += len(piece); left -= len(piece)
        body = str(got).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
class Server(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
server = Server(("", 0), Handler, bind_and_activate=False)
server.socket.close()
server.socket = listener
server.serve_forever()
PY

source Benchmarks/proxy/two-nodes.sh
start_two_nodes "session-command=/usr/bin/python3 $work/bulk-session.py
auth-none=1"

id=$(curl -sf -X POST "http://127.0.0.1:$port/api/sessions" | python3 -c 'import sys,json; print(json.load(sys.stdin)["id"])')
locate_session "$id"
nginx_port=$(free_port)
source Benchmarks/proxy/nginx-conf.sh
NGINX_WORKERS=${NGINX_WORKERS:-$(nproc)} nginx_conf "$work" "$nginx_port" "$session_socket" \
    | sed 's#proxy_http_version 1.1;#proxy_http_version 1.1; proxy_buffering off; proxy_request_buffering off; proxy_buffer_size 64k; proxy_buffers 4 64k; proxy_busy_buffers_size 128k; client_max_body_size 0;#' > "$work/nginx.conf"
nginx -c "$work/nginx.conf"
owner_pid=$(pgrep -f "droverd --config-dir $work/$owner_dir")
other_pid=$(pgrep -f "droverd --config-dir $work/node" | grep -vx "$owner_pid")
for _ in $(seq 50); do curl -sf -o /dev/null "http://$owner:$port/s/$id/bulk?mb=1" && break; sleep 0.2; done
head -c "$((mb << 20))" /dev/zero > "$work/upload"

rss() { awk -v f="$2" '$1 == f":" {print $2}' "/proc/$1/status"; }  # pid field -> kB
# Runs curl with the given arguments; prints MB/s and how far the pids' peak resident memory
# (VmHWM, reset before through /proc/PID/clear_refs) rose above their memory before it.
measure() { # label field pids... -- curl arguments
    local label=$1 field=$2; shift 2
    local pids=() idle=0 peak=0 p
    while [ "$1" != -- ]; do pids+=("$1"); shift; done; shift
    for p in "${pids[@]}"; do echo 5 > "/proc/$p/clear_refs"; idle=$((idle + $(rss "$p" VmRSS))); done
    local speed
    speed=$(curl -s -o /dev/null -w "%{$field}" "$@")
    for p in "${pids[@]}"; do peak=$((peak + $(rss "$p" VmHWM))); done
    awk -v s="$speed" -v peak="$peak" -v idle="$idle" -v l="$label" 'BEGIN {printf "%-28s %8.1f MB/s   peak memory +%.1f MB over %.1f MB before\n", l, s / 1048576, (peak - idle) / 1024, idle / 1024}'
}
nginx_pids=$(pgrep -P "$(cat "$work/nginx.pid")" | tr '\n' ' ')
echo "Bulk benchmark: $mb MiB down and up through each proxy, $rounds rounds, $(nproc) cores"
for round in $(seq "$rounds"); do
    order=(nginx owning non-owning); [ $((round % 2)) = 0 ] && order=(non-owning owning nginx)
    for path in "${order[@]}"; do
        case $path in
        nginx) url="http://127.0.0.1:$nginx_port/s/$id"; pids=($nginx_pids) ;;
        owning) url="http://$owner:$port/s/$id"; pids=($owner_pid) ;;
        non-owning) url="http://$other:$port/s/$id"; pids=($owner_pid $other_pid) ;;
        esac
        measure "round $round $path download" speed_download "${pids[@]}" -- "$url/bulk?mb=$mb" | tee -a "$work/results"
        measure "round $round $path upload" speed_upload "${pids[@]}" -- -X POST -T "$work/upload" "$url/sink" | tee -a "$work/results"
    done
done
python3 - "$work/results" <<'SUMMARY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    m = re.match(r"round \d+ (\S+) (download|upload)\s+([\d.]+) MB/s\s+peak memory \+([\d.]+)", line)
    if m: runs.setdefault((m[1], m[2]), []).append((float(m[3]), float(m[4])))
print(f"medians of {len(next(iter(runs.values())))} rounds:")
for direction in ("download", "upload"):
    peer = statistics.median(r for r, _ in runs[("nginx", direction)])
    for path in ("nginx", "owning", "non-owning"):
        rate = statistics.median(r for r, _ in runs[(path, direction)])
        peak = max(m for _, m in runs[(path, direction)])
        print(f"  {direction:8} {path:11} {rate:8.1f} MB/s  {rate / peer:5.2f}x nginx  peak memory at most +{peak:.1f} MB")
SUMMARY

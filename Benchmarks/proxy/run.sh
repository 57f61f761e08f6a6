#!/usr/bin/env bash
# Proxy throughput, latency and CPU: wrk against one demo session through its owning Drover
# node, through a non-owning node, and through nginx as a reverse proxy to it, all in one run;
# then 1,000 WebSockets held through a node and the node's resident memory.
# Usage: [AUTH=cookie] [BIN=DIR] Benchmarks/proxy/run.sh [SECONDS=10] [CONNECTIONS=64] [ROUNDS=3]
# ROUNDS rounds, each running nginx and the two Drover paths in turn (the order alternating
# between rounds, as single runs on a small machine vary by a third); the summary gives the
# medians, with CPU seconds per 10,000 requests of the proxies (from /proc/<pid>/stat over each
# run) beside throughput and latency. Instructions per request: Benchmarks/proxy/instructions.sh.
# AUTH=cookie: the nodes use PAM sign-in (not auth-none) and every request carries a signed
# sign-in cookie, as in production (the WebSocket part is skipped).
# Kernel CPU (system time) per request is shown beside the total, for the proxies.
# ORIGINS=1 (with auth-none): the nodes serve sessions at their own origins
# (`www-session-domain=localhost`), and Drover's requests carry `Host: <id>.localhost:PORT`, so
# the origin checks of every request are measured (the WebSocket part is skipped).
# WEBSOCKETS=N: how many WebSockets the last part holds (default 1,000; past 2,000 the nodes'
# www-max-connections is raised to fit, and the client's open-file limit).
# SYSCALLS=1: after the rounds, one more run each of nginx and the owning node with
# `strace -c -f` attached, and a table of system calls per request for both (strace slows both
# down: the counts per request are what it is for, not the throughput of that run).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-10}
connections=${2:-64}
rounds=${3:-3}
for tool in wrk nginx; do
    command -v $tool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null; break; }
done
# droverd starts every session through drover-session-guard, found beside it.
auth=${AUTH:-none}
# BIN=DIR: the release binaries of DIR instead of this checkout's (to compare two builds).
if [ -z "${BIN:-}" ]; then
    for product in droverd drover-session-guard drover-demo-session; do swift build -c release --product $product >/dev/null; done
    [ "$auth" = cookie ] && swift build -c release --product drover-probe >/dev/null
fi
bin=$(cd "${BIN:-$(swift build -c release --show-bin-path)}" && pwd)  # absolute: the session command runs elsewhere

work=$(mktemp -d /tmp/drover-proxybench.XXXXXX)
source Benchmarks/proxy/two-nodes.sh
# Each WebSocket holds two descriptors in the node (the client's, the session's), and one in the
# client: the nodes, the session and the client get room for them (root may raise the hard limit).
if [ "${WEBSOCKETS:-1000}" -gt 2000 ]; then ulimit -Hn $(( WEBSOCKETS * 5 + 4096 )) 2>/dev/null || true; ulimit -n $(( WEBSOCKETS * 5 + 4096 )) 2>/dev/null || true; fi
start_two_nodes "session-command=$bin/drover-demo-session
$([ "$auth" = cookie ] && echo "auth-pam-service=login" || echo "auth-none=1")
$([ "${ORIGINS:-0}" = 1 ] && echo "www-session-domain=localhost")
$([ "${WEBSOCKETS:-1000}" -gt 2000 ] && echo "www-max-connections=$((WEBSOCKETS * 2 + 1000))")"

sign_in=()
if [ "$auth" = cookie ]; then
    { read -r cookie; read -r csrf; } < <("$bin/drover-probe" cookie --config-dir "$work/node1" --user "$(id -un)")
    sign_in=(-H "Cookie: drover-auth=$cookie")
fi
id=$(curl -sf -X POST "${sign_in[@]}" ${csrf:+-H "X-CSRF-Token: $csrf"} "http://127.0.0.1:$port/api/sessions" | python3 -c 'import sys,json; print(json.load(sys.stdin)["id"])')
# At the session's own origin: every request to a node names it (nginx ignores the name).
[ "${ORIGINS:-0}" = 1 ] && sign_in+=(-H "Host: $id.localhost:$port")
locate_session "$id"
nginx_port=$(free_port)
source Benchmarks/proxy/nginx-conf.sh
# As many nginx workers as droverd has event loops (one per core): the issue-39 measure.
# NGINX_WORKERS=1 gives the single worker of the figures before 2026-12-05 ~22:00.
NGINX_WORKERS=${NGINX_WORKERS:-$(nproc)} nginx_conf "$work" "$nginx_port" "$session_socket" > "$work/nginx.conf"
nginx -c "$work/nginx.conf"
path="/s/$id/count"
curl -sf "http://127.0.0.1:$nginx_port$path" >/dev/null
curl -sf "${sign_in[@]}" "http://$owner:$port$path" >/dev/null

owner_pid=$(pgrep -f "droverd --config-dir $work/$owner_dir")
other_pid=$(pgrep -f "droverd --config-dir $work/node" | grep -vx "$owner_pid")
nginx_pids="$(cat "$work/nginx.pid") $(pgrep -P "$(cat "$work/nginx.pid")" | tr '\n' ' ')"
session_pid=$(pgrep -f "^$bin/drover-demo-session" | head -1)
ticks() { # awk expression of /proc/PID/stat fields, pids -> their sum over the pids, in seconds
    local fields=$1 total=0 pid; shift
    for pid in "$@"; do
        total=$(awk -v t="$total" -v hz="$(getconf CLK_TCK)" "{print t + ($fields) / hz}" "/proc/$pid/stat" 2>/dev/null || echo "$total")
    done
    echo "$total"
}
cpu() { ticks '$14 + $15' "$@"; }  # pids -> CPU seconds they used so far (user + system)
syscpu() { ticks '$15' "$@"; }     # pids -> system (kernel) CPU seconds they used so far

echo "Proxy benchmark: wrk -t2 -c$connections -d${seconds}s --latency GET $path (keep-alive), $rounds rounds, $(nproc) cores, auth=$auth, nginx workers ${NGINX_WORKERS:-$(nproc)}"
echo "CPU-s/10k: CPU seconds per 10,000 requests of the proxy (both nodes on the non-owning path) and of the session"
results=$work/results
: > "$results"
run() { # round name url pids...
    local round=$1 name=$2 url=$3 out before session_before first_before; shift 3
    before=$(cpu "$@"); session_before=$(cpu $session_pid); first_before=$(cpu "$1"); local sys_before; sys_before=$(syscpu "$@")
    out=$(wrk -t2 -c"$connections" -d"${seconds}s" --latency "${sign_in[@]}" "$url")
    local proxy_cpu session_cpu requests rps p50 p99 proxy_sys
    proxy_cpu=$(awk -v a="$(cpu "$@")" -v b="$before" 'BEGIN {print a - b}')
    proxy_sys=$(awk -v a="$(syscpu "$@")" -v b="$sys_before" 'BEGIN {print a - b}')
    session_cpu=$(awk -v a="$(cpu $session_pid)" -v b="$session_before" 'BEGIN {print a - b}')
    first_cpu=$(awk -v a="$(cpu "$1")" -v b="$first_before" 'BEGIN {print a - b}')  # the owner's share, on the non-owning path
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    echo "$round $name $requests $rps $p50 $p99 $proxy_cpu $session_cpu $first_cpu $proxy_sys" >> "$results"
    awk -v r="$round" -v n="$name" -v q="$requests" -v rps="$rps" -v p50="$p50" -v p99="$p99" -v c="$proxy_cpu" -v s="$session_cpu" -v k="$proxy_sys" \
        'BEGIN {printf "round %d %-16s %10.0f req/s  p50 %-8s p99 %-8s proxy %.3f CPU-s/10k (kernel %.3f)  session %.3f CPU-s/10k\n", r, n, rps, p50, p99, c * 10000 / q, k * 10000 / q, s * 10000 / q}'
}
# No "direct" run: the session listens only on its Unix socket, which wrk cannot reach.
for round in $(seq "$rounds"); do
    if [ $((round % 2)) = 1 ]; then
        run "$round" nginx "http://127.0.0.1:$nginx_port$path" $nginx_pids
        run "$round" owning-node "http://$owner:$port$path" $owner_pid
        run "$round" non-owning-node "http://$other:$port$path" $owner_pid $other_pid
    else
        run "$round" non-owning-node "http://$other:$port$path" $owner_pid $other_pid
        run "$round" owning-node "http://$owner:$port$path" $owner_pid
        run "$round" nginx "http://127.0.0.1:$nginx_port$path" $nginx_pids
    fi
done
python3 - "$results" <<'PY'
import sys, re, statistics
def ms(t):
    m = re.match(r"([\d.]+)(us|ms|s)", t); v = float(m.group(1))
    return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v
runs = {}
for line in open(sys.argv[1]):
    _, name, requests, rps, p50, p99, proxy_cpu, session_cpu, owner_cpu, proxy_sys = line.split()
    runs.setdefault(name, []).append((float(rps), ms(p50), ms(p99), float(proxy_cpu) * 1e4 / float(requests), float(session_cpu) * 1e4 / float(requests),
                                      float(owner_cpu) * 1e4 / float(requests), float(proxy_sys) * 1e4 / float(requests)))
med = {name: [statistics.median(v[i] for v in values) for i in range(7)] for name, values in runs.items()}
print(f"\nmedians of {len(runs['nginx'])} rounds:")
for name in ("nginx", "owning-node", "non-owning-node"):
    rps, p50, p99, cpu, session, owner, kernel = med[name]
    split = f"  (owner {owner:.3f}, first node {cpu - owner:.3f})" if name == "non-owning-node" else ""
    print(f"  {name:16s} {rps:10.0f} req/s  p50 {p50:.2f} ms  p99 {p99:.2f} ms  proxy {cpu:.3f} CPU-s/10k (kernel {kernel:.3f})  session {session:.3f} CPU-s/10k{split}")
ng, own, other = med["nginx"], med["owning-node"], med["non-owning-node"]
print(f"ratios to nginx (medians): owning node throughput {own[0] / ng[0]:.2f}x (target >= 1.0), p99 {own[2] / ng[2]:.2f}x (target <= 1.2), "
      f"CPU per request {own[3] / ng[3]:.2f}x (target <= 1.0), kernel CPU per request {own[6] / ng[6]:.2f}x; "
      f"non-owning node throughput {other[0] / ng[0]:.2f}x (target >= 0.7)")
PY
if [ "${SYSCALLS:-0}" = 1 ]; then
    command -v strace >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace >/dev/null; }
    traced() { # name url pids...
        local name=$1 url=$2 tracer out args=(); shift 2
        for pid in "$@"; do args+=(-p "$pid"); done
        strace -c -f -q -o "$work/strace-$name" "${args[@]}" & tracer=$!
        sleep 1
        out=$(wrk -t2 -c"$connections" -d"${seconds}s" "${sign_in[@]}" "$url")
        kill -INT $tracer; wait $tracer 2>/dev/null || true
        echo "$name $(awk '/requests in/ {print $1}' <<<"$out")" >> "$work/strace-requests"
    }
    traced nginx "http://127.0.0.1:$nginx_port$path" $nginx_pids
    traced owning-node "http://$owner:$port$path" $owner_pid
    python3 - "$work" <<'PY'
import sys
work = sys.argv[1]
requests = dict(line.split() for line in open(work + "/strace-requests"))
calls = {}
for name in requests:
    for line in open(f"{work}/strace-{name}"):
        fields = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
            calls.setdefault(fields[-1], {})[name] = int(fields[3])
print(f"\nsystem calls per request (strace -c -f, {requests['nginx']} requests through nginx, {requests['owning-node']} through the owning node):")
print(f"  {'call':20s} {'nginx':>8s} {'owning':>8s}")
rows = sorted(calls.items(), key=lambda item: -max(n / int(requests[k]) for k, n in item[1].items()))
for call, by in rows:
    per = {k: by.get(k, 0) / int(requests[k]) for k in requests}
    if max(per.values()) >= 0.001:
        print(f"  {call:20s} {per['nginx']:8.3f} {per['owning-node']:8.3f}")
total = {k: sum(by.get(k, 0) for by in calls.values()) / int(requests[k]) for k in requests}
print(f"  {'all':20s} {total['nginx']:8.3f} {total['owning-node']:8.3f}")
PY
fi
[ "$auth" = cookie ] || [ "${ORIGINS:-0}" = 1 ] && exit 0
echo
python3 Benchmarks/proxy/websockets.py "$owner" "$port" "/s/$id/echo" "$(pgrep -f "droverd --config-dir $work/node$([ "$owner" = 127.0.0.1 ] && echo 1 || echo 2)")" "${WEBSOCKETS:-1000}" 3

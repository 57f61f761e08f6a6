#!/usr/bin/env bash
# Time to the first kernel output in JupyterLab (issue 33's benchmark): one JupyterLab session,
# started through its shipped kind on a two-node cluster, measured ROUNDS times on three paths
# in alternation — the Lab reached directly on its Unix socket (the peer), through the node that
# runs it, and through the other node (a session hop). Each measurement starts a kernel over the
# REST API, opens its WebSocket, runs print(6*7) and waits for "42"; the kernel is shut down
# after. Prints median, p90 and min per path and each median against the direct path's.
# Usage: Benchmarks/jupyter/run.sh [ROUNDS]   (JupyterLab from PyPI: scripts/add-kind.sh's environment)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-15}
for product in droverd drover drover-demo-session drover-session-guard; do swift build -c release --product $product >/dev/null; done
bin=$(swift build -c release --show-bin-path)
source scripts/install-deps.sh
jupyter=$(install_jupyter "$PWD/.drover-data/jupyter")
work=$(mktemp -d /tmp/drover-jupyter.XXXXXX)
chmod 755 "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
key=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; if [ -n "${KEEP:-}" ]; then echo "logs kept in $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT
mkdir -p "$work/shared"
root_flag=""
[ "$(id -u)" = 0 ] && root_flag='"--allow-root", '
for n in 1 2; do
    mkdir -p "$work/node$n/kinds"
    printf 'www-address=127.0.0.%s\nwww-port=%s\nserver-data-dir=data\nserver-shared-storage-path=%s\nsession-run-dir=%s\nauth-none=1\nauth-none-allow-anyone-on-the-network=1\ndefault-session-kind=jupyterlab\n' \
        "$n" "$port" "$work/shared" "$work/run$n" > "$work/node$n/rserver.conf"
    sed "s|^command=\[\"jupyter-lab\", |command=[\"$jupyter/jupyter-lab\", $root_flag|" config/kinds.available/jupyterlab.conf > "$work/node$n/kinds/jupyterlab.conf"
    printf 'provider=sqlite\ndirectory=%s\n' "$work/shared" > "$work/node$n/database.conf"
    : > "$work/node$n/load-balancer"
    printf '%s\n' "$key" > "$work/node$n/secure-cookie-key"; chmod 600 "$work/node$n/secure-cookie-key"
    "$bin/droverd" --config-dir "$work/node$n" 2> "$work/node$n.log" & pids+=($!)
    for _ in $(seq 100); do curl -sf "http://127.0.0.$n:$port/health-check" >/dev/null && break; sleep 0.1; done
done
created=$(curl -sf -X POST "http://127.0.0.1:$port/api/sessions")
id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["id"])' "$created")
owner=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["node"])' "$created")
other=$((3 - owner))
echo "session $id on node $owner; JupyterLab $("$jupyter/jupyter-lab" --version); $rounds rounds"
python3 Benchmarks/jupyter/first_output.py "$rounds" "/s/$id/" "$work/run$owner/$id/http.sock" "127.0.0.$owner:$port" "127.0.0.$other:$port"

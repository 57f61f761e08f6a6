# Two Drover nodes on one SQLite registry (127.0.0.1 and 127.0.0.2, one port), sourced by the proxy
# benchmarks (run.sh, bulk.sh). Needs $work (a fresh folder) and $bin (the release binaries).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Usage: start_two_nodes RSERVER_LINES. Writes both nodes' configuration (RSERVER_LINES added to
# rserver.conf), starts them, stops them (and nginx, and removes $work) on exit, and waits until
# both answer. Sets $port, $node1 and $node2.
start_two_nodes() {
    port=$(free_port)
    mkdir -p "$work/shared"
    local key n
    key=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    for n in 1 2; do
        mkdir -p "$work/node$n"
        printf 'www-address=127.0.0.%s\nwww-port=%s\nserver-data-dir=data\nserver-shared-storage-path=%s\n%s\n' \
            "$n" "$port" "$work/shared" "$1" > "$work/node$n/rserver.conf"
        printf 'provider=sqlite\ndirectory=%s\n' "$work/shared" > "$work/node$n/database.conf"
        : > "$work/node$n/load-balancer"
        printf '%s\n' "$key" > "$work/node$n/secure-cookie-key"
        chmod 600 "$work/node$n/secure-cookie-key"
    done
    "$bin/droverd" --config-dir "$work/node1" 2> "$work/node1.log" & node1=$!
    sleep 1
    "$bin/droverd" --config-dir "$work/node2" 2> "$work/node2.log" & node2=$!
    trap 'kill $node1 $node2 2>/dev/null || true; nginx -c "$work/nginx.conf" -s stop 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
    for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/health-check" >/dev/null && curl -sf "http://127.0.0.2:$port/health-check" >/dev/null && break; sleep 0.2; done
}

# Usage: locate_session ID. Sets $owner (the address of the node that runs it), $other (the other
# node's), $owner_dir (node1 or node2) and $session_socket.
locate_session() {
    owner=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select n.host from session s join node n on n.id=s.node_id where s.id=?',(sys.argv[2],)).fetchone()[0])" "$work/shared/drover.sqlite" "$1")
    other=127.0.0.2; owner_dir=node1; [ "$owner" = 127.0.0.2 ] && { other=127.0.0.1; owner_dir=node2; }
    session_socket="$work/$owner_dir/data/sessions/$1.sock"
}

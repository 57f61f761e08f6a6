#!/usr/bin/env bash
# Starts a throw-away PostgreSQL server: sourced by test.sh and the benchmarks.
# start_private_postgres [EXTRA_CONF_LINE...] runs initdb in a temporary directory and starts
# the server on a free 127.0.0.1 port, as the postgres user when we are root. It sets pg_bin,
# pg_port, pg_root (data in $pg_root/data), pg_user, pg_pid and run_pg (runs a command as the
# server's owner); stop_private_postgres stops it and removes the directory.
start_private_postgres() {
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -x "$pg_bin/initdb" ] || { echo "PostgreSQL server binaries not found under /usr/lib/postgresql; apt-get install postgresql" >&2; return 1; }
    pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    pg_root=$(mktemp -d /tmp/drover-pg.XXXXXX)
    chmod 0755 "$pg_root"
    if [ "$(id -u)" = 0 ]; then
        chown postgres:postgres "$pg_root"
        run_pg() { runuser -u postgres -- "$@"; }
        pg_user=postgres
    else
        run_pg() { "$@"; }
        pg_user=$(id -un)
    fi
    run_pg "$pg_bin/initdb" -D "$pg_root/data" -U "$pg_user" -A trust --no-sync >/dev/null
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $pg_port"
        echo "unix_socket_directories = '$pg_root'"
        local line
        for line in "$@"; do echo "$line"; done
    } >> "$pg_root/data/postgresql.conf"
    run_pg "$pg_bin/pg_ctl" -D "$pg_root/data" -l "$pg_root/log" -w start >/dev/null
    pg_pid=$(head -n 1 "$pg_root/data/postmaster.pid")
}

stop_private_postgres() {
    [ -n "${pg_root:-}" ] || return 0
    run_pg "$pg_bin/pg_ctl" -D "$pg_root/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$pg_root"
}

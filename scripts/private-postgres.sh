#!/usr/bin/env bash
# Starts a throw-away PostgreSQL server: sourced by test.sh and the benchmarks.
# start_private_postgres [EXTRA_CONF_LINE...] runs initdb in a temporary directory and starts
# the server on a free 127.0.0.1 port, as the postgres user when we are root. It sets pg_bin,
# pg_port, pg_root (data in $pg_root/data), pg_user, pg_pid and run_pg (runs a command as the
# server's owner); stop_private_postgres stops it and removes the directory. With pg_tls=1 the
# server also accepts TLS, with a certificate for 127.0.0.1 and localhost signed by a CA made
# here; pg_ca is that CA's certificate (clients still may connect without TLS).
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
    local tls_lines=()
    if [ "${pg_tls:-0}" = 1 ]; then
        make_private_postgres_certificates
        tls_lines=("ssl = on" "ssl_cert_file = '$pg_root/tls/server.pem'" "ssl_key_file = '$pg_root/tls/server.key'"
                   "ssl_min_protocol_version = 'TLSv1.2'")
    fi
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $pg_port"
        echo "unix_socket_directories = '$pg_root'"
        local line
        for line in "$@" "${tls_lines[@]}"; do echo "$line"; done
    } >> "$pg_root/data/postgresql.conf"
    run_pg "$pg_bin/pg_ctl" -D "$pg_root/data" -l "$pg_root/log" -w start >/dev/null
    pg_pid=$(head -n 1 "$pg_root/data/postmaster.pid")
}

# A CA and a server certificate for 127.0.0.1 and localhost, owned by the server's user (its key
# mode 0600, as PostgreSQL demands); sets pg_ca.
make_private_postgres_certificates() {
    local dir=$pg_root/tls
    run_pg mkdir -m 0755 "$dir"
    run_pg sh -c "cd '$dir' && umask 077 \
        && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
               -subj '/CN=Drover test CA' -keyout ca.key -out ca.pem 2>/dev/null \
        && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj '/CN=localhost' \
               -keyout server.key -out server.csr 2>/dev/null \
        && printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > server.ext \
        && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
               -extfile server.ext -out server.pem 2>/dev/null \
        && chmod 0644 ca.pem server.pem"
    pg_ca=$dir/ca.pem
}

stop_private_postgres() {
    [ -n "${pg_root:-}" ] || return 0
    run_pg "$pg_bin/pg_ctl" -D "$pg_root/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$pg_root"
}

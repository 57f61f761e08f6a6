#!/usr/bin/env bash
# Runs Drover's whole test suite on a fresh machine: installs what is missing, starts a private
# PostgreSQL (as the postgres user, in a temporary data directory, on a free local port), builds,
# and runs every test target. Usage: scripts/test.sh [extra `swift test` arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*"; }

# 1. System packages.
source scripts/install-deps.sh
install_missing libpq-dev libssl-dev libsqlite3-dev libpam0g-dev postgresql pkg-config
# A real browser (and its WebDriver) for the cross-site WebSocket and dashboard tests; Prometheus's checker for the metrics test.
install_missing chromium chromium-driver
# openssl: the TLS and session-origin tests make a test CA and its certificates.
install_missing openssl
# The package test: dpkg-deb builds it, readelf reads the programs' libraries, curl asks the
# installed node for its health.
install_missing binutils curl
# libfaketime: the registry failover test gives the standbys another clock, as another machine's.
install_missing faketime
# HAProxy: the front load balancer of the rolling-upgrade test (it checks each node's /ready).
install_missing haproxy
# JupyterLab and Notebook from PyPI, run unmodified as sessions through their shipped kinds.
install_missing python3-venv
jupyter_dir=/var/cache/drover-tests/jupyter
[ "$(id -u)" = 0 ] || jupyter_dir=${XDG_CACHE_HOME:-$HOME/.cache}/drover-tests/jupyter
export DROVER_TEST_JUPYTER_BIN=$(install_jupyter "$jupyter_dir")
export DROVER_TEST_PROMTOOL=$(extract_promtool "$PWD/.build/test-tools/prometheus")

# 2. A private PostgreSQL for the integration tests.
source scripts/private-postgres.sh
pg_tls=1 start_private_postgres "fsync = off" "max_connections = 300"
test_logs=$(mktemp -d /tmp/drover-test-logs.XXXXXX)
export DROVER_TEST_LOG_DIR=$test_logs
cleanup() {
    local status=$?
    # A failing run says whether the shared PostgreSQL was still up, and what it logged last.
    if [ "$status" != 0 ] && [ -n "${pg_root:-}" ]; then
        if kill -0 "$pg_pid" 2>/dev/null; then log "PostgreSQL (pid $pg_pid) was still running"; else log "PostgreSQL (pid $pg_pid) had stopped"; fi
        tail -n 40 "$pg_root/log" 2>/dev/null | sed 's/^/  postgresql: /' || true
        cp "$pg_root/log" "$test_logs/postgresql.log" 2>/dev/null || true
    fi
    stop_private_postgres
    if [ -n "${DROVER_KEEP_TEST_LOGS:-}" ]; then echo "==> process outputs kept in $test_logs"; else rm -rf "$test_logs"; fi
}
trap cleanup EXIT
log "PostgreSQL on 127.0.0.1:$pg_port (data in $pg_root/data)"

# What the integration tests need to reach, create databases in, and restart the server.
export DROVER_TEST_PG_HOST=127.0.0.1
export DROVER_TEST_PG_PORT=$pg_port
export DROVER_TEST_PG_USER=$pg_user
export DROVER_TEST_PG_BIN=$pg_bin
export DROVER_TEST_PG_DATA=$pg_root/data
export DROVER_TEST_PG_CA=$pg_ca
export DROVER_TEST_PG_RUN_AS=$([ "$(id -u)" = 0 ] && echo postgres || echo "")

# 3. Build everything (the executables too: the tests run them as processes), then test.
log "building"
swift build --build-tests
# The release after this tree's, for the rolling-upgrade test (a scratch path of its own).
log "building the next release (scripts/build-next-release.sh)"
export DROVER_TEST_NEXT_BIN=$(bash scripts/build-next-release.sh)
log "testing"
swift test --skip-build --disable-xctest "$@"

# 4. No key or password the suite uses may appear in anything its processes printed.
log "scanning the output of $(find "$test_logs" -type f | wc -l) test processes for secrets"
if leaks=$(grep -rlF -f Tests/secrets-used-by-tests.txt "$test_logs"); then
    echo "test.sh: a secret appears in the output of: $leaks" >&2
    grep -rhoF -f Tests/secrets-used-by-tests.txt "$test_logs" | sort -u | sed 's/^/  leaked: /' >&2
    exit 1
fi
log "no secret in any process output"

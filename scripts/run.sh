#!/usr/bin/env bash
# Runs one Drover node on the embedded default (config/: SQLite, one node, the demo session),
# installing the build's system packages first if they are missing.
# Usage: scripts/run.sh [extra droverd arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
install_missing libpq-dev libssl-dev libsqlite3-dev libpam0g-dev pkg-config
swift build
exec .build/debug/droverd --config-dir config "$@"

#!/usr/bin/env bash
# Replay bookkeeping under a flood of hop openings (issue 34, item 4): SECONDS of openings from one
# user, each with a fresh nonce, accepted by the table as it was before (a dictionary copied on
# every insertion past 10,000 entries, under the lock every opening and internal call shares) and
# as it is now (buckets per second, a share per user). Prints openings per second and CPU seconds
# per 100,000 openings for each, release build.
# Usage: Benchmarks/replay/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build -c release --product drover-probe >/dev/null
"$(swift build -c release --show-bin-path)/drover-probe" replay-bench --seconds "${1:-5}"

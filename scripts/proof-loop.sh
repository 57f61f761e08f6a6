#!/usr/bin/env bash
# Proof of the test command (issue 12): a fresh clone of this checkout's HEAD, scripts/test.sh run
# N times (runs from CI_FROM on as CI=true .ci/run while a CPU-bound process occupies one core,
# as on a shared CI machine); one line per run in /tmp/proof-summary.txt.
# Usage: scripts/proof-loop.sh [N=13] [CI_FROM=11]
set -u
rm -rf ${PROOF_DIR:-/tmp/drover-proof}
git clone -q "$(cd "$(dirname "$0")/.." && pwd)" ${PROOF_DIR:-/tmp/drover-proof}
cd ${PROOF_DIR:-/tmp/drover-proof}
rev=$(git rev-parse --short HEAD)
: > /tmp/proof-summary.txt
total=${1:-13}; ci_from=${2:-11}
for i in $(seq 1 $total); do
    start=$(date +%s)
    if [ $i -lt $ci_from ]; then
        DROVER_KEEP_TEST_LOGS=1 bash scripts/test.sh > /tmp/proof-$i.log 2>&1; rc=$?
    else
        ( while :; do :; done ) & hog=$!
        DROVER_KEEP_TEST_LOGS=1 CI=true bash .ci/run > /tmp/proof-$i.log 2>&1; rc=$?
        kill $hog; wait $hog 2>/dev/null
    fi
    end=$(date +%s)
    fails=$(grep -E "^✘ Test [a-zA-Z].*failed after" /tmp/proof-$i.log | sed -E 's/ recorded.*//; s/ failed after.*//' | tr '\n' ';')
    echo "run $i ($rev, $([ $i -lt $ci_from ] && echo test.sh || echo 'CI=true .ci/run + CPU hog')): exit $rc in $((end-start)) s; $(grep -o 'Test run with [0-9]* tests.*' /tmp/proof-$i.log | tail -1); failed: ${fails:-none}" >> /tmp/proof-summary.txt
    # Keep the process logs of a failed run only.
    if [ $rc -eq 0 ]; then rm -rf $(grep -o '/tmp/drover-test-logs\.[A-Za-z0-9]*' /tmp/proof-$i.log | head -1); fi
done
echo done >> /tmp/proof-summary.txt

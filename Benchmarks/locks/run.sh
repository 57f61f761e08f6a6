#!/usr/bin/env bash
# Lock throughput and latency: Drover's linkbased and advisory providers against Python's
# flufl.lock (link-based, NFS-safe) and filelock (flock), in one run on one directory.
# Each contender loops acquire, one lease refresh and release for SECONDS; "contended" runs PROCS such loops at once.
# Usage: Benchmarks/locks/run.sh [SECONDS] [PROCS] [DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-5}
procs=${2:-4}
dir=${3:-$(mktemp -d /tmp/drover-lockbench.XXXXXX)}
mkdir -p "$dir"

venv=/tmp/drover-bench-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import flufl.lock, filelock' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q flufl.lock filelock
fi
swift build -c release --product drover-probe >/dev/null
probe=.build/release/drover-probe
conf=$(mktemp -d /tmp/drover-lockbench-conf.XXXXXX)
printf 'server-data-dir=%s\n' "$conf/data" > "$conf/rserver.conf"

run_one() { # contender path start -> JSON line
    case "$1" in
        linkbased|advisory) "$probe" lock-bench --config-dir "$conf" --lock-type "$1" --path "$2" --seconds "$seconds" --at "$3" ;;
        *) "$venv/bin/python" Benchmarks/locks/bench_peers.py "$1" "$2" "$seconds" "$3" ;;
    esac
}

measure() { # contender nprocs -> "ops_per_s p50_us p99_us"
    local start=$(( $(date +%s) + 2 )) outs=() i
    for ((i = 0; i < $2; i++)); do
        outs+=("$(mktemp)")
        run_one "$1" "$dir/bench-$1.lock" "$start" > "${outs[$i]}" &
    done
    wait
    python3 - "${outs[@]}" <<'PY'
import json, sys
runs = [json.load(open(f)) for f in sys.argv[1:]]
ops = sum(r["ops"] for r in runs)
secs = runs[0]["seconds"]
p50 = max(r["p50_us"] for r in runs)
p99 = max(r["p99_us"] for r in runs)
print(f"{ops / secs:.0f} {p50:.1f} {p99:.1f}")
PY
    rm -f "${outs[@]}"
}

echo "Lock benchmark: ${seconds}s per run, directory $dir ($(df -T "$dir" | awk 'NR==2 {print $2}'))"
for mode in uncontended contended; do
    n=1; [ "$mode" = contended ] && n=$procs
    echo
    echo "== $mode ($n process(es)) =="
    printf '%-12s %12s %10s %10s\n' contender "acq+rel/s" "p50 us" "p99 us"
    declare -A result=()
    for c in linkbased advisory flufl.lock filelock; do
        result[$c]=$(measure "$c" "$n")
        read -r ops p50 p99 <<<"${result[$c]}"
        printf '%-12s %12s %10s %10s\n' "$c" "$ops" "$p50" "$p99"
    done
    read -r link _ <<<"${result[linkbased]}"; read -r adv _ <<<"${result[advisory]}"
    read -r flufl _ <<<"${result[flufl.lock]}"; read -r fl _ <<<"${result[filelock]}"
    python3 -c "print(f'ratios: linkbased/flufl.lock = {$link/$flufl:.2f}x   advisory/filelock = {$adv/$fl:.2f}x')"
    unset result
done
rm -rf "$conf"

#!/usr/bin/env bash
# Builds each libFuzzer target (-sanitize=fuzzer,address) and runs it for SECONDS (default 60):
# ConfigParsers from the kernel's own sources, and from the package in Fuzz/HTTP (built on
# Drover's modules): HTTP, which serves fuzz input to a node's real HTTP server over loopback;
# Request, which gives it to the client request framer (split reads, llhttp differential);
# Response, which gives it to the proxy as a session's answer (split reads, llhttp differential);
# and CookieAndSignature, which gives it to the sign-in cookie and node-to-node signature checks.
# Crashes land in Fuzz/out/<target>/ (git-ignored); each becomes a regression test.
# Usage: Fuzz/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
kernel=Sources/DroverKernel
config_sources=($kernel/Configuration/{AddressRange,ConfigFile,ConfigReader,ConfigurationError,ConfigSource,LoadBalancerConfiguration,ServerConfiguration,FileLocksConfiguration,DatabaseConfiguration}.swift)
flags=(-sanitize=fuzzer,address -parse-as-library -O -swift-version 6 -enable-upcoming-feature ExistentialAny
       -enable-upcoming-feature InternalImportsByDefault)
mkdir -p .build-fuzz Fuzz/out
build() { # target sources...
    local target=$1; shift
    swiftc "${flags[@]}" "$@" "Fuzz/$target.swift" -o ".build-fuzz/$target" 2> ".build-fuzz/$target.build.log" \
        || { cat ".build-fuzz/$target.build.log" >&2; exit 1; }
}
build ConfigParsers "${config_sources[@]}"
for product in HTTP Request Response CookieAndSignature; do
    http=(swift build -c release --package-path Fuzz/HTTP --scratch-path .build-fuzz/http --product Fuzz$product
          -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library)
    "${http[@]}" > .build-fuzz/$product.build.log 2>&1 || { cat .build-fuzz/$product.build.log >&2; exit 1; }
    cp "$("${http[@]}" --show-bin-path)/Fuzz$product" .build-fuzz/$product
done
status=0
for target in ConfigParsers CookieAndSignature HTTP Request Response; do
    mkdir -p "Fuzz/out/$target" "Fuzz/corpus/$target"
    echo "== $target: ${seconds}s"
    # The HTTP target keeps a running node (thread pools, caches) across inputs: memory it holds
    # on purpose is not a per-input leak, so LeakSanitizer is off there (-rss_limit_mb still applies).
    options=(-max_total_time="$seconds" -max_len=4096 -artifact_prefix="Fuzz/out/$target/")
    leaks=1
    [ "$target" = HTTP ] && { options+=(-detect_leaks=0); leaks=0; }
    if ! SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=$leaks ".build-fuzz/$target" "${options[@]}" \
            "Fuzz/corpus/$target" $( [ -d "Fuzz/seeds/$target" ] && echo "Fuzz/seeds/$target" ) 2> "Fuzz/out/$target.log"; then
        status=1
        echo "   CRASH: see Fuzz/out/$target.log and Fuzz/out/$target/"
    fi
    grep -E "^#[0-9]+.*(DONE|pulse)" "Fuzz/out/$target.log" | tail -1 || true
done
exit $status

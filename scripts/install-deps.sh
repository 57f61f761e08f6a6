#!/usr/bin/env bash
# Installs the Debian packages Drover needs that are missing: sourced by run.sh and test.sh.
# Usage: install_missing PACKAGE...
install_missing() {
    local missing=() p
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "==> installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Puts Prometheus's `promtool` (which checks the metrics' text format) in DIR, taken out of
# Debian's prometheus package without installing it: no Prometheus server is installed or run.
# Usage: extract_promtool DIR; prints the path of promtool.
extract_promtool() {
    local dir=$1
    if [ ! -x "$dir/usr/bin/promtool" ]; then
        local download
        download=$(mktemp -d)
        chmod 755 "$download"  # apt's _apt user writes the file
        (cd "$download" && { apt-get download -qq prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download -qq prometheus >/dev/null; }; })
        mkdir -p "$dir"
        dpkg-deb -x "$download"/prometheus_*.deb "$dir.tmp" && mv "$dir.tmp/usr" "$dir/" && rm -rf "$dir.tmp"
        rm -rf "$download"
    fi
    echo "$dir/usr/bin/promtool"
}

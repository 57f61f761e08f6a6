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

# The Jupyter versions the tests run as real sessions, from PyPI.
jupyter_packages=(jupyterlab==4.6.6 notebook==7.6.5)

# Installs JupyterLab and Jupyter Notebook from PyPI into a virtual environment at DIR (kept
# between runs: a marker names what is in it), with Debian's python3 so that every user can run
# it. Usage: install_jupyter DIR; prints the environment's bin folder.
install_jupyter() {
    local dir=$1 wanted="${jupyter_packages[*]}"
    if [ "$(cat "$dir/.drover-packages" 2>/dev/null)" != "$wanted" ]; then
        echo "==> installing ${wanted} into $dir" >&2
        rm -rf "$dir"
        mkdir -p "$(dirname "$dir")"
        /usr/bin/python3 -m venv "$dir" >&2
        "$dir/bin/pip" install -q --disable-pip-version-check "${jupyter_packages[@]}" >&2
        echo "$wanted" > "$dir/.drover-packages"
        chmod -R a+rX "$dir"
    fi
    echo "$dir/bin"
}

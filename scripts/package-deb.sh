#!/usr/bin/env bash
# Builds Drover's Debian package from a release build: droverd, drover, drover-session-guard (and
# the reference session, drover-demo-session), the systemd unit, the example configuration, and
# the maintainer scripts (config/package/debian). Usage:
#
#   scripts/package-deb.sh [OUTDIR]        # builds `swift build -c release --static-swift-stdlib`
#   BIN=DIR scripts/package-deb.sh [OUTDIR] # packages the binaries already in DIR (the tests do)
#
# Prints the package's path: OUTDIR/drover_<version>_<arch>.deb (OUTDIR defaults to .build/package).
# The version is the VERSION file's, as the binaries embed it (DROVER_TEST_VERSION_FILE names
# another, as for the build: the rolling-upgrade test's next release); DROVER_TEST_PACKAGE_VERSION
# overrides the package's own version only (a test making an "upgrade" of the same binaries), and
# DROVER_PACKAGE_COMPRESSION dpkg-deb's compression ("gzip -z1"; default its own, xz).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.build/package}
release=$(tr -d ' \n\r' < "${DROVER_TEST_VERSION_FILE:-VERSION}")
version=${DROVER_TEST_PACKAGE_VERSION:-$release}
arch=$(dpkg --print-architecture)
programs=(droverd drover drover-session-guard drover-demo-session)

fail() { echo "package-deb.sh: $*" >&2; exit 1; }
command -v dpkg-deb > /dev/null || fail "dpkg-deb is missing; install dpkg (apt-get install dpkg)"

if [ -z "${BIN:-}" ]; then
    # The Swift runtime and Foundation linked in, so the package needs no Swift toolchain.
    # (One product at a time: given several --product options, swift build builds the last.)
    for program in "${programs[@]}"; do swift build -c release --static-swift-stdlib --product "$program" >&2; done
    BIN=$(swift build -c release --show-bin-path)
fi
for program in "${programs[@]}"; do
    [ -x "$BIN/$program" ] || fail "$BIN/$program is missing; build it first (swift build -c release --static-swift-stdlib)"
done
built=$("$BIN/droverd" --version)
case "$built" in "Drover $release "*) ;; *) fail "$BIN/droverd says '$built', not the VERSION file's $release; rebuild it";; esac

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"
install -d "$root/DEBIAN" "$root/usr/lib/drover/bin" "$root/usr/bin" "$root/usr/sbin" "$root/lib/systemd/system" \
    "$root/usr/share/drover/examples" "$root/usr/share/doc/drover"
# The programs together in one folder: droverd starts the guard found beside itself.
# Stripped of their symbol tables, as Debian ships programs (a static release droverd: 130 MB → 73 MB).
for program in "${programs[@]}"; do
    install -m 0755 "$BIN/$program" "$root/usr/lib/drover/bin/$program"
    strip --strip-unneeded "$root/usr/lib/drover/bin/$program"
done
ln -s ../lib/drover/bin/droverd "$root/usr/sbin/droverd"
ln -s ../lib/drover/bin/drover "$root/usr/bin/drover"
# The unit as config/droverd.service has it, with the package's paths (its install comment dropped).
sed -e 's#^ExecStart=/usr/local/bin/droverd#ExecStart=/usr/sbin/droverd#' -e '/^# systemd unit for a Drover node/,/^#   sudo systemctl daemon-reload/d' \
    config/droverd.service > "$root/lib/systemd/system/droverd.service"
grep -q '^ExecStart=/usr/sbin/droverd ' "$root/lib/systemd/system/droverd.service" || fail "config/droverd.service: no ExecStart=/usr/local/bin/droverd line to rewrite"
# Examples, copied into /etc by postinst where nothing is there: never conffiles, so an upgrade
# never replaces or asks about what the administrator changed.
cp -r config/package/etc "$root/usr/share/drover/examples/"
install -d "$root/usr/share/drover/examples/etc/drover/kinds.available"
cp config/kinds.available/*.conf "$root/usr/share/drover/examples/etc/drover/kinds.available/"
install -m 0644 README.md "$root/usr/share/doc/drover/README.md"
printf 'Drover %s\nBuilt from https://github.com/ (this repository) with scripts/package-deb.sh.\n' "$version" > "$root/usr/share/doc/drover/copyright"
install -m 0755 config/package/debian/postinst config/package/debian/prerm config/package/debian/postrm "$root/DEBIAN/"

# Depends: the package of every shared library the programs load from the system (not the Swift
# toolchain's, for a build that links them dynamically: such a package runs only beside it).
# Only the libraries the programs name themselves (ELF NEEDED), not what those load in turn.
libraries() {
    local program
    for program in "${programs[@]}"; do
        local needed
        needed=$(readelf -d "$BIN/$program" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p')
        ldd "$BIN/$program" | awk -v needed=" $(echo $needed) " 'index(needed, " " $1 " ") && $3 ~ /^\// {print $3}'
    done | sort -u
}
depends=$(libraries | while read -r library; do dpkg -S "$(readlink -f "$library")" 2>/dev/null || dpkg -S "$library" 2>/dev/null || true; done |
    cut -d: -f1 | sort -u | paste -sd, | sed 's/,/, /g')
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: drover
Version: $version
Architecture: $arch
Maintainer: Drover developers <drover@localhost>
Installed-Size: $size
Depends: $depends
Section: net
Priority: optional
Homepage: https://github.com/
Description: load-balanced cluster of per-user interactive sessions
 Drover runs per-user interactive sessions (JupyterLab, Notebook, VS Code, RStudio or any
 program serving HTTP) on a cluster of nodes sharing PostgreSQL and an NFS home volume, and
 places, proxies, suspends and moves them across nodes.
CONTROL
mkdir -p "$out"
package="$out/drover_${version}_${arch}.deb"
# DROVER_PACKAGE_COMPRESSION: dpkg-deb's compressor and level ("xz", "gzip -z1"); its default.
compression=()
if [ -n "${DROVER_PACKAGE_COMPRESSION:-}" ]; then
    read -r compressor level <<< "$DROVER_PACKAGE_COMPRESSION"
    compression=("-Z$compressor" ${level:+"$level"})
fi
dpkg-deb --root-owner-group "${compression[@]}" --build "$root" "$package" > /dev/null
echo "$package"

import DroverCluster
import DroverTesting
import Foundation
import Testing

/// The Debian package (`scripts/package-deb.sh`), built from this build's binaries and installed
/// with the real dpkg into a root of its own: an overlay of this machine's root in a mount
/// namespace, so nothing of the machine changes. It installs, runs, upgrades without touching
/// the configuration, is removed and purged.
@Suite struct PackageTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    static var canRun: Bool {
        getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/dpkg-deb")
            && FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare")
    }

    /// Builds the package of this build's binaries, as `version` when given (the package's own
    /// version only), into `folder`, and returns its path. `next`: the binaries of
    /// scripts/build-next-release.sh instead, whose VERSION file is beside their folder.
    func package(into folder: String, version: String? = nil, next: String? = nil) async throws -> String {
        // Fast compression: the debug binaries are large, and the test reads the package once.
        var environment = ["BIN": next ?? Executable.productsDirectory, "DROVER_PACKAGE_COMPRESSION": "gzip -z1"]
        if let version { environment["DROVER_TEST_PACKAGE_VERSION"] = version }
        if let next { environment["DROVER_TEST_VERSION_FILE"] = URL(fileURLWithPath: next).deletingLastPathComponent().path + "/VERSION" }
        let built = try await Executable.run("/bin/bash", [Self.root + "/scripts/package-deb.sh", folder], environment: environment, timeout: 300)
        try #require(built.status == 0, "package-deb.sh: \(built.stderr)")
        return built.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test(.enabled(if: canRun, "needs root, dpkg-deb and unshare"))
    func thePackageInstallsRunsUpgradesKeepingTheConfigurationAndPurges() async throws {
        let work = TemporaryDirectory(prefix: "drover-package")
        let release = ClusterMembership.currentVersion
        let first = try await package(into: work.path + "/n")
        let second = try await package(into: work.path + "/next", version: release + "+1")
        #expect(first.hasSuffix("/drover_\(release)_amd64.deb") || first.hasSuffix("/drover_\(release)_arm64.deb"), "\(first)")

        // What it holds: the three programs together (droverd starts the guard beside itself),
        // the unit, the examples; no file under /etc, so dpkg never owns the configuration.
        let contents = try await Executable.run("/usr/bin/dpkg-deb", ["--contents", first])
        for path in ["./usr/lib/drover/bin/droverd", "./usr/lib/drover/bin/drover", "./usr/lib/drover/bin/drover-session-guard",
                     "./usr/sbin/droverd -> ../lib/drover/bin/droverd", "./usr/bin/drover -> ../lib/drover/bin/drover",
                     "./lib/systemd/system/droverd.service", "./usr/share/drover/examples/etc/drover/rserver.conf",
                     "./usr/share/drover/examples/etc/pam.d/drover"] {
            #expect(contents.stdout.contains(path), "the package lacks \(path)")
        }
        #expect(!contents.stdout.contains(" ./etc/"), "the package owns files in /etc")
        let fields = try await Executable.run("/usr/bin/dpkg-deb", ["--field", first, "Package", "Version", "Depends"])
        #expect(fields.stdout.contains("Package: drover\nVersion: \(release)\n"), "\(fields.stdout)")
        for library in ["libpq5", "libsqlite3-0", "libpam0g", "libssl3"] {
            #expect(fields.stdout.contains(library), "Depends lacks \(library): \(fields.stdout)")
        }
        let unit = try await Executable.run("/bin/sh", ["-c", "dpkg-deb --fsys-tarfile '\(first)' | tar -xO ./lib/systemd/system/droverd.service"])
        #expect(unit.stdout.contains("ExecStart=/usr/sbin/droverd --config-dir /etc/drover\n"), "\(unit.stdout)")
        #expect(unit.stdout.contains("KillSignal=SIGTERM\n") && unit.stdout.contains("Delegate=yes\n"))
        #expect(!unit.stdout.contains("/usr/local/bin"), "\(unit.stdout)")

        // Installed, run, upgraded, removed and purged, in a root of its own.
        let port = try FreePort.find()
        let result = try await Executable.run("/usr/bin/unshare", ["--mount", "--propagation", "private", "/bin/bash", "-c", Self.install,
                                                                 "install", work.path, first, second, String(port)], timeout: 300)
        let steps = result.stdout.split(separator: "\n").map(String.init)
        #expect(result.status == 0, "the install script failed:\n\(result.stdout)\n\(result.stderr)")
        #expect(steps == [
            "installed: Drover \(release) (cluster protocol 1, registry schema 10)",
            "drover: Drover \(release) (cluster protocol 1, registry schema 10)",
            "examples: /etc/drover/database.conf /etc/drover/file-locks /etc/drover/kinds.available/jupyter-notebook.conf "
                + "/etc/drover/kinds.available/jupyterlab.conf /etc/drover/rserver.conf /etc/pam.d/drover",
            "served: ok",
            "stopped: 0",
            "upgraded: \(release)+1",
            "kept: www-port=\(port)",
            "kept removed: file-locks",
            "removed: /etc/drover/rserver.conf kept",
            "purged: nothing left",
        ], "\(result.stdout)\n\(result.stderr)")
    }

    /// Runs in a mount namespace of its own: $1 a work folder, $2 and $3 the two packages, $4 a
    /// free port.
    static let install = #"""
        set -euo pipefail
        work=$1; first=$2; second=$3; port=$4
        layers=$work/layers
        mkdir -p "$layers"
        mount -t tmpfs drover-package "$layers"
        mkdir -p "$layers/upper" "$layers/work" "$layers/root"
        mount -t overlay overlay -o "lowerdir=/,upperdir=$layers/upper,workdir=$layers/work" "$layers/root"
        r=$layers/root
        mount --bind /proc "$r/proc"
        mount --bind /dev "$r/dev"
        mount -t tmpfs tmp "$r/tmp"
        cp "$first" "$r/tmp/first.deb"
        cp "$second" "$r/tmp/second.deb"
        in_root() { chroot "$r" "$@"; }
        if in_root dpkg -s drover > /dev/null 2>&1; then echo "this machine has drover installed already" >&2; exit 1; fi

        in_root dpkg -i /tmp/first.deb > "$r/tmp/dpkg.log" 2>&1 || { cat "$r/tmp/dpkg.log" >&2; exit 1; }
        echo "installed: $(in_root droverd --version)"
        echo "drover: $(in_root drover --version)"
        echo "examples: $(cd "$r" && find etc/drover etc/pam.d/drover -type f | sort | sed 's#^#/#' | tr '\n' ' ' | sed 's/ $//')"

        # The installed node runs on the shipped configuration (a free port on loopback).
        # (The administrator's own change, which the upgrade below must keep.)
        sed -i "s/^www-port=8787$/www-port=$port/" "$r/etc/drover/rserver.conf"
        printf 'www-address=127.0.0.1\n' >> "$r/etc/drover/rserver.conf"
        chroot "$r" /usr/sbin/droverd --config-dir /etc/drover > "$r/tmp/droverd.log" 2>&1 &
        node=$!
        trap 'kill -KILL "$node" 2> /dev/null || true' EXIT
        for _ in $(seq 1 100); do
            answer=$(curl -s "http://127.0.0.1:$port/health-check" || true)
            [ "$answer" = ok ] && break
            sleep 0.1
        done
        echo "served: $answer"
        [ "$answer" = ok ] || cat "$r/tmp/droverd.log" >&2
        # The ordered stop (SIGTERM), as the unit stops it: exit status 0, within the unit's 60 s.
        kill -TERM "$node"
        for _ in $(seq 1 600); do kill -0 "$node" 2> /dev/null || break; sleep 0.1; done
        status=0
        if kill -0 "$node" 2> /dev/null; then kill -KILL "$node"; status=hung; fi
        wait "$node" || [ "$status" = hung ] || status=$?
        # Reaped: its pid may be another process's by the time this script exits.
        trap - EXIT
        echo "stopped: $status"

        # The administrator changed one file (above) and removes another; the upgrade keeps both so.
        rm "$r/etc/drover/file-locks"
        in_root dpkg -i /tmp/second.deb > "$r/tmp/dpkg.log" 2>&1 || { cat "$r/tmp/dpkg.log" >&2; exit 1; }
        echo "upgraded: $(in_root dpkg-query -W -f '${Version}' drover)"
        echo "kept: $(grep -m1 '^www-port=' "$r/etc/drover/rserver.conf")"
        [ -e "$r/etc/drover/file-locks" ] || echo "kept removed: file-locks"

        in_root dpkg -r drover > "$r/tmp/dpkg.log" 2>&1 || { cat "$r/tmp/dpkg.log" >&2; exit 1; }
        if [ ! -e "$r/usr/sbin/droverd" ] && [ ! -e "$r/usr/lib/drover/bin/drover-session-guard" ] && [ -e "$r/etc/drover/rserver.conf" ]; then
            echo "removed: /etc/drover/rserver.conf kept"
        fi
        in_root dpkg -P drover > "$r/tmp/dpkg.log" 2>&1 || { cat "$r/tmp/dpkg.log" >&2; exit 1; }
        if [ ! -e "$r/etc/drover" ] && [ ! -e "$r/etc/pam.d/drover" ] && [ ! -e "$r/var/lib/drover" ] && [ ! -e "$r/usr/lib/drover" ]; then
            echo "purged: nothing left"
        fi
        """#
}

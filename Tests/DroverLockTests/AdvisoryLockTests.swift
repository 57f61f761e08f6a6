import DroverKernel
import DroverTesting
import Foundation
import Testing

@Suite struct AdvisoryLockTests {
    @Test func aProbeFromTheSameProcessKeepsTheLock() async throws {
        let harness = try LockHarness(.advisory)
        let path = harness.path()
        let lock = try #require(try harness.provider.tryAcquire(path))
        #expect(try harness.provider.isLocked(path))
        // A plain open and close of the file, which drops a classic fcntl lock.
        close(open(path, O_RDONLY))
        #expect(try harness.provider.isLocked(path))
        let other = try harness.probe(path)
        #expect(try await other.wait(timeout: 20) == 0)
        #expect(other.stdout == "busy\n")
        try lock.release()
        let after = try harness.probe(path)
        #expect(try await after.wait(timeout: 20) == 0)
        #expect(after.stdout.hasPrefix("acquired"))
    }

    @Test func aMissingLockFileIsNotLockedAndIsNotCreatedByTheProbe() async throws {
        let harness = try LockHarness(.advisory)
        #expect(try harness.provider.isLocked(harness.path("absent")) == false)
        #expect(!harness.config.exists("shared/absent"))
    }

    /// Another local user who could open a lock file could hold a lock on it (a read lock
    /// is enough) and keep a session from starting: lock files are 0600 whatever the umask,
    /// and one made by another user is refused.
    @Test func theLockFileIsItsOwnersAloneWhateverTheUmask() async throws {
        let harness = try LockHarness(.advisory)
        let probe = try harness.probe(harness.path(), umask: "000")
        #expect(try await probe.wait(timeout: 20) == 0)
        var info = stat()
        stat(harness.path(), &info)
        #expect(info.st_mode & 0o777 == 0o600)
    }

    @Test(.enabled(if: geteuid() == 0))
    func aLockFileMadeByAnotherUserIsRefused() async throws {
        let harness = try LockHarness(.advisory)
        let path = harness.path("planted")
        #expect(FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o666]))
        #expect(chown(path, 65534, 65534) == 0)
        #expect(throws: (any Error).self) { _ = try harness.provider.tryAcquire(path) }
        do {
            _ = try harness.provider.tryAcquire(path)
        } catch {
            #expect("\(error)".contains("the lock file was made by another user (uid 65534)"), "\(error)")
        }
    }
}

@Suite struct LockTesterCommandTests {
    @Test func twoRunsGiveTheSeedsVerdict() async throws {
        let harness = try LockHarness(.linkbased)
        let shared = harness.config.url("shared")
        let first = try RunningProcess("drover", ["locktester", "--config-dir", harness.config.path, "--dir", shared])
        try await first.waitUntil("first run holds both") { first.stdout.contains("Holding both locks") }
        #expect(first.stdout.hasPrefix("* Acquired advisory lock\n* Acquired link-based lock\n"))
        let second = try await Executable.run("drover", ["locktester", "--config-dir", harness.config.path, "--dir", shared])
        #expect(second.status == 0)
        #expect(second.stdout == """
            * Unable to acquire advisory lock
            * Unable to acquire link-based lock
            Your filesystem appears to support advisory locks.
            Your filesystem appears to support link-based locks.

            """)
        first.signal(SIGINT)
        #expect(try await first.wait(timeout: 20) == 0)
        let third = try RunningProcess("drover", ["locktester", "--config-dir", harness.config.path, "--dir", shared])
        try await third.waitUntil("the locks are free again") { third.stdout.contains("Holding both locks") }
        third.signal(SIGTERM)
        #expect(try await third.wait(timeout: 20) == 0)
    }

    /// A lock *error* is not "support": on a folder mounted read-only (a mount namespace of the
    /// command's own, so nothing else sees it) both attempts fail with a reason, the command
    /// says it cannot tell, and exits 1.
    @Test(.enabled(if: geteuid() == 0))
    func aLockErrorIsReportedAsAnErrorNotAsSupport() async throws {
        let harness = try LockHarness(.linkbased)
        let shared = harness.config.url("shared")
        let result = try await Executable.run("/usr/bin/unshare", [
            "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
            #"mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@""#, shared,
            Executable.path("drover"), "locktester", "--config-dir", harness.config.path, "--dir", shared,
        ])
        #expect(result.status == 1, "\(result.stdout)\(result.stderr)")
        #expect(!result.stdout.contains("appears to support"), "\(result.stdout)")
        #expect(result.stdout.contains("* Error taking the advisory lock: "))
        #expect(result.stdout.contains("* Error taking the link-based lock: "))
        #expect(result.stdout.contains("Cannot tell whether your filesystem supports link-based locks: taking one failed ("))
        #expect(result.stdout.lowercased().contains("read-only"), "the reason is given: \(result.stdout)")
    }

    @Test(arguments: LockKind.onDisk)
    func stressReportsAcquisitionsAndNoViolations(kind: LockKind) async throws {
        let harness = try LockHarness(kind)
        let result = try await Executable.run("drover", ["locktester", "--config-dir", harness.config.path, "--stress",
                                                   "--processes", "4", "--seconds", "2", "--lock-type", kind.rawValue], timeout: 60)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("Lock type:     \(kind.rawValue)"))
        #expect(result.stdout.contains("Violations:    0"))
        let acquisitions = result.stdout.split(separator: "\n").first { $0.hasPrefix("Acquisitions:") }
            .flatMap { $0.split(separator: " ").dropFirst().first }.flatMap { Int($0) } ?? 0
        #expect(acquisitions > 10)
        #expect(result.stdout.contains("Acquire latency p50: "))
    }

    @Test func withoutADirectoryItSaysWhatToSet() async throws {
        let dir = try ConfigDirectory()
        try dir.write("rserver.conf", "server-data-dir=data\n")
        let result = try await Executable.run("drover", ["locktester", "--config-dir", dir.path])
        #expect(result.status == 2)
        #expect(result.stderr.contains("pass --dir DIR or set server-shared-storage-path"))
    }
}

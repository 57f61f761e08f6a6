public import DroverKernel
public import Foundation
import Synchronization

/// Cross-node locks by hard link (`lock-type=linkbased`, the default), robust on NFS.
///
/// A contender creates a unique proxy file beside the lock and hard-links it to the lock path.
/// It holds the lock when the path and its proxy are one inode with two links — checked by
/// `stat`, never by `link()`'s return value, which NFS can get wrong after a retransmission.
///
/// - The holder refreshes the shared inode's time through its own descriptor, so it touches
///   only its own inode: a refresh by a holder that lost the lock changes nothing of its
///   successor's.
/// - Releasing removes only the holder's proxy. The lock path is left with one link, which
///   every contender reads as free, so a release never removes anyone else's lock.
/// - A lock not refreshed for `timeout-interval` seconds is stale. A free or stale lock is
///   cleared by one contender only, elected through a claim file (`<lock>.break`), which then
///   re-checks that it is clearing the very inode it judged, and sweeps leftover proxies.
/// - Where the file system refuses hard links, the lock falls back to exclusive create, and
///   says so in the lock log.
public struct LinkBasedLockProvider: LockProvider {
    public let name = LinkBasedLockProviderFactory.name
    public let refreshInterval: Int
    /// Seconds after which an unrefreshed lock is stale.
    public let timeoutInterval: Int
    let log: LockEventLog
    let linkCall: @Sendable (String, String) -> Int32
    let hostName: String

    /// - Parameters:
    ///   - link: the `link(2)` call; replaceable only so tests can simulate a file system
    ///     without hard links.
    public init(refreshRate: Int, timeoutInterval: Int, log: LockEventLog = .off,
                link: @escaping @Sendable (String, String) -> Int32 = { Foundation.link($0, $1) }) {
        refreshInterval = refreshRate
        self.timeoutInterval = timeoutInterval
        self.log = log
        linkCall = link
        hostName = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "host"
    }

    enum Mode: Sendable { case link, exclusiveCreate }

    public func tryAcquire(_ path: String) throws -> (any HeldLock)? {
        // A lock held (and fresh) at this moment is refused before any proxy is made: a
        // contender retrying while another holds the lock costs one `stat` an attempt, not a
        // proxy created, linked and removed. Only a refusal is decided here; taking the lock
        // is decided by the link below, as ever. (An error here is left to the full path.)
        if (try? isLocked(path)) == true {
            log.record("refused", path: path)
            return nil
        }
        let proxy = try Proxy.create(for: path, host: hostName)
        var mode = Mode.link
        var brokeStale = false
        for _ in 0..<4 {
            let linked: Int32
            let linkError: Int32
            switch mode {
            case .link:
                linked = linkCall(proxy.path, path)
                linkError = errno
            case .exclusiveCreate:
                linked = try proxy.becomeLockFile(path)
                linkError = linked == 0 ? 0 : EEXIST
            }
            if mode == .link ? FileIdentity.owns(path, descriptor: proxy.descriptor) : linked == 0 {
                log.record("acquired", path: path, detail: mode == .link ? "" : "mode=exclusive-create")
                return LinkBasedHeldLock(path: path, proxy: proxy, mode: mode, log: log, brokeStale: brokeStale)
            }
            if linked != 0, linkError != EEXIST {
                if mode == .link, [EPERM, ENOTSUP, EOPNOTSUPP, ENOSYS, EXDEV].contains(linkError) {
                    log.record("fallback", path: path, detail: "reason=\"hard links refused (\(String(cString: strerror(linkError))))\" mode=exclusive-create")
                    mode = .exclusiveCreate
                    continue
                }
                proxy.discard()
                throw LockError(path: path, "cannot link the proxy file to the lock (\(String(cString: strerror(linkError))))")
            }
            var observed = stat()
            guard stat(path, &observed) == 0 else {
                if errno == ENOENT { continue }
                let reason = String(cString: strerror(errno))
                proxy.discard()
                throw LockError(path: path, "cannot inspect the lock (\(reason))")
            }
            let released = observed.st_nlink < 2 && !FileIdentity.isExclusiveLock(observed)
            guard released || FileIdentity.age(observed) > Double(timeoutInterval) else {
                proxy.discard()
                log.record("refused", path: path)
                return nil
            }
            switch try clear(path, observed: observed, released: released, proxy: proxy, mode: mode) {
            case .claimedByAnother:
                proxy.discard()
                log.record("refused", path: path, detail: "reason=\"another contender is clearing it\"")
                return nil
            case .brokeStale: brokeStale = true
            case .cleared: break
            }
        }
        proxy.discard()
        log.record("refused", path: path)
        return nil
    }

    /// What ``clear(_:observed:released:proxy:mode:)`` did.
    enum Clearing { case claimedByAnother, cleared, brokeStale }

    /// Removes a released or stale lock, if this contender wins the claim to do so.
    /// - Returns: `.claimedByAnother` when another contender holds the claim; `.brokeStale` when
    ///   this one removed a stale lock; `.cleared` otherwise (a released lock removed, or one
    ///   taken or refreshed meanwhile left alone).
    private func clear(_ path: String, observed: stat, released: Bool, proxy: Proxy, mode: Mode) throws -> Clearing {
        let claim = path + ".break"
        let claimed: Bool
        switch mode {
        case .link:
            _ = linkCall(proxy.path, claim)
            claimed = FileIdentity.owns(claim, descriptor: proxy.descriptor)
        case .exclusiveCreate:
            let fd = open(claim, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            claimed = fd >= 0
            if fd >= 0 { close(fd) }
        }
        guard claimed else {
            removeAbandonedClaim(claim)
            return .claimedByAnother
        }
        defer { unlink(claim) }
        // Re-check under the claim: clear only the inode judged free or stale, never a lock
        // that was taken or refreshed meanwhile.
        var current = stat()
        if stat(path, &current) == 0, current.st_ino == observed.st_ino, current.st_dev == observed.st_dev,
           released ? current.st_nlink < 2 : FileIdentity.age(current) > Double(timeoutInterval) {
            unlink(path)
            log.record(released ? "cleared released lock" : "broke stale lock", path: path,
                       detail: "age=\(String(format: "%.1f", FileIdentity.age(current)))s")
            // A holder that released took its proxy with it; only a dead holder leaves one.
            if !released { sweepProxies(of: path) }
            return released ? .cleared : .brokeStale
        }
        return .cleared
    }

    /// A claim left by a contender that died while clearing is removed once it is stale.
    private func removeAbandonedClaim(_ claim: String) {
        var info = stat()
        if stat(claim, &info) == 0, FileIdentity.age(info) > Double(timeoutInterval) {
            unlink(claim)
            log.record("removed abandoned claim", path: claim)
        }
    }

    /// Removes proxies of holders that died: one link left and older than the timeout.
    private func sweepProxies(of path: String) {
        let directory = (path as NSString).deletingLastPathComponent
        let prefix = Proxy.prefix(for: path)
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory.isEmpty ? "." : directory) else { return }
        for name in names where name.hasPrefix(prefix) {
            let candidate = (directory.isEmpty ? "." : directory) + "/" + name
            var info = stat()
            if lstat(candidate, &info) == 0, info.st_nlink < 2, FileIdentity.age(info) > Double(timeoutInterval) {
                unlink(candidate)
                log.record("swept proxy", path: candidate)
            }
        }
    }

    public func isLocked(_ path: String) throws -> Bool {
        var info = stat()
        guard stat(path, &info) == 0 else {
            if errno == ENOENT { return false }
            throw LockError(path: path, "cannot inspect the lock (\(String(cString: strerror(errno))))")
        }
        // One link left means the holder released it, unless it is an exclusive-create lock.
        if info.st_nlink < 2, !FileIdentity.isExclusiveLock(info) { return false }
        return FileIdentity.age(info) <= Double(timeoutInterval)
    }
}

/// Selects ``LinkBasedLockProvider`` with `lock-type=linkbased`.
public enum LinkBasedLockProviderFactory: LockProviderFactory {
    public static let name = "linkbased"

    /// Reads `refresh-rate` (20), `timeout-interval` (30), `enable-logging` (0), `log-file`.
    public static func make(config: FileLocksConfiguration, context: PluginContext) throws -> any LockProvider {
        LinkBasedLockProvider(refreshRate: config.refreshRate, timeoutInterval: config.timeoutInterval,
                              log: try LockEventLog(config: config))
    }
}

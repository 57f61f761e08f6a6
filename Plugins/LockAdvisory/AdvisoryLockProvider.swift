public import DroverKernel
import Foundation
import Synchronization

/// Advisory locks (`lock-type=advisory`): open-file-description locks (`F_OFD_SETLK`) on the
/// lock file, where the file system supports them.
///
/// Unlike classic `fcntl` locks, an OFD lock belongs to the open file, not the process: closing
/// another descriptor of the same file (a probe) never drops it, and two threads contend like
/// two processes. The lock file is made readable and writable by every user of the cluster,
/// whatever the umask.
public struct AdvisoryLockProvider: LockProvider {
    public let name = AdvisoryLockProviderFactory.name
    public let refreshInterval: Int
    let log: LockEventLog

    // Linux's values; glibc only declares them under _GNU_SOURCE.
    static let getLock: Int32 = 36
    static let setLock: Int32 = 37

    public init(refreshRate: Int, log: LockEventLog = .off) {
        refreshInterval = refreshRate
        self.log = log
    }

    static func wholeFile(_ type: Int32) -> flock {
        var range = flock()
        range.l_type = Int16(type)
        range.l_whence = Int16(SEEK_SET)
        range.l_start = 0
        range.l_len = 0
        range.l_pid = 0
        return range
    }

    public func tryAcquire(_ path: String) throws -> (any HeldLock)? {
        // 0600: a user who could open the file could hold a lock on it (a read lock is enough)
        // and so keep a session from starting.
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else {
            throw LockError(path: path, "cannot open the lock file (\(String(cString: strerror(errno))))")
        }
        var info = stat()
        if fstat(fd, &info) == 0 {
            guard info.st_uid == geteuid() || info.st_uid == 0 else {
                close(fd)
                throw LockError(path: path, "the lock file was made by another user (uid \(info.st_uid)), who could hold it for ever; "
                                + "remove it, and keep the lock folder writable only by droverd's user")
            }
            if info.st_mode & 0o077 != 0 { fchmod(fd, 0o600) }
        }
        var range = Self.wholeFile(F_WRLCK)
        if fcntl(fd, Self.setLock, &range) == 0 {
            log.record("acquired", path: path)
            return AdvisoryHeldLock(path: path, descriptor: fd, log: log)
        }
        let error = errno
        close(fd)
        if error == EAGAIN || error == EACCES {
            log.record("refused", path: path)
            return nil
        }
        throw LockError(path: path, "cannot lock the file (\(String(cString: strerror(error))))")
    }

    public func isLocked(_ path: String) throws -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else {
            if errno == ENOENT { return false }
            throw LockError(path: path, "cannot open the lock file (\(String(cString: strerror(errno))))")
        }
        // Closing this probe descriptor leaves every OFD lock in this process in place.
        defer { close(fd) }
        var range = Self.wholeFile(F_WRLCK)
        guard fcntl(fd, Self.getLock, &range) == 0 else {
            throw LockError(path: path, "cannot query the lock (\(String(cString: strerror(errno))))")
        }
        return range.l_type != Int16(F_UNLCK)
    }
}

/// An OFD lock held through one open descriptor.
final class AdvisoryHeldLock: HeldLock {
    let path: String
    private let descriptor: Int32
    private let log: LockEventLog
    private let released = Mutex(false)

    init(path: String, descriptor: Int32, log: LockEventLog) {
        self.path = path
        self.descriptor = descriptor
        self.log = log
    }

    /// An OFD lock cannot be taken away while its descriptor is open.
    func refresh() throws -> Bool {
        !released.withLock { $0 }
    }

    func release() throws {
        let first = released.withLock { done in
            defer { done = true }
            return !done
        }
        guard first else { return }
        close(descriptor)
        log.record("released", path: path)
    }

    deinit {
        try? release()
    }
}

/// Selects ``AdvisoryLockProvider`` with `lock-type=advisory`.
public enum AdvisoryLockProviderFactory: LockProviderFactory {
    public static let name = "advisory"

    /// Reads `refresh-rate` (20), `enable-logging` (0), `log-file`.
    public static func make(config: FileLocksConfiguration, context: PluginContext) throws -> any LockProvider {
        AdvisoryLockProvider(refreshRate: config.refreshRate, log: try LockEventLog(config: config))
    }
}

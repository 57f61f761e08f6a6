import DroverKernel
import Foundation
import Synchronization

/// A contender's unique file beside the lock: `.<lock name>.proxy.<host>.<pid>.<random>`. Its
/// permission bits record the mode (``linkMode`` or ``exclusiveMode``, set with `fchmod`, so
/// the umask cannot blur them): a one-link lock file is then told apart by one `stat` as a
/// released link lock or a held exclusive-create lock. The holder's identity is written inside
/// for operators.
final class Proxy: Sendable {
    let path: String
    let descriptor: Int32
    private let discarded = Mutex(false)

    static let linkMode: mode_t = 0o644
    static let exclusiveMode: mode_t = 0o640

    static func prefix(for lockPath: String) -> String {
        "." + (lockPath as NSString).lastPathComponent + ".proxy."
    }

    private init(path: String, descriptor: Int32) {
        self.path = path
        self.descriptor = descriptor
    }

    /// Creates the proxy exclusively, with the holder's identity inside.
    static func create(for lockPath: String, host: String) throws -> Proxy {
        let directory = (lockPath as NSString).deletingLastPathComponent
        let name = prefix(for: lockPath) + "\(host).\(getpid()).\(Crypto.randomBytes(6).hexString)"
        let path = (directory.isEmpty ? "." : directory) + "/" + name
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else {
            throw LockError(path: lockPath, "cannot create a proxy file beside the lock (\(String(cString: strerror(errno))))")
        }
        fchmod(fd, linkMode)
        let proxy = Proxy(path: path, descriptor: fd)
        proxy.writeIdentity(mode: "link", host: host)
        return proxy
    }

    /// Writes the holder's identity, then keeps only a read-only descriptor: refreshing (the
    /// owner's `futimens`) needs no write access, and a holder that keeps no file open for
    /// writing leaves the storage free to be remounted read-only under it — its refreshes then
    /// fail, as they must, instead of the remount being refused.
    private func writeIdentity(mode: String, host: String) {
        let text = Array("\(mode) \(host) \(getpid())\n".utf8)
        _ = text.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, 0) }
        // The same inode again, by descriptor (no path to race for), read-only.
        let readOnly = open("/proc/self/fd/\(descriptor)", O_RDONLY | O_CLOEXEC)
        guard readOnly >= 0 else { return }
        dup2(readOnly, descriptor)
        _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
        close(readOnly)
    }

    /// Exclusive-create fallback: creates the lock file itself, keeping the proxy's descriptor
    /// role. Returns 0 on success, -1 when the lock exists.
    func becomeLockFile(_ lockPath: String) throws -> Int32 {
        let fd = open(lockPath, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o644)
        if fd < 0 {
            if errno == EEXIST { return -1 }
            throw LockError(path: lockPath, "cannot create the lock file (\(String(cString: strerror(errno))))")
        }
        // Make the proxy's descriptor refer to the lock file, so refresh and identity checks
        // work the same way in both modes.
        dup2(fd, descriptor)
        _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
        close(fd)
        unlink(path)
        fchmod(descriptor, Self.exclusiveMode)
        writeIdentity(mode: "exclusive", host: ProcessInfo.processInfo.hostName)
        return 0
    }

    /// Removes the proxy file (if it still exists under its name) and closes it; idempotent.
    func discard() {
        let first = discarded.withLock { done in
            defer { done = true }
            return !done
        }
        guard first else { return }
        unlink(path)
        close(descriptor)
    }
}

/// Inode identity and age of lock files.
enum FileIdentity {
    /// True when `path` is the same inode as `descriptor` with a second link (the proxy), or
    /// an exclusive-create lock whose inode is `descriptor`'s.
    static func owns(_ path: String, descriptor: Int32) -> Bool {
        var named = stat()
        var held = stat()
        guard stat(path, &named) == 0, fstat(descriptor, &held) == 0 else { return false }
        return named.st_ino == held.st_ino && named.st_dev == held.st_dev
    }

    /// Seconds since the file was last refreshed.
    static func age(_ info: stat) -> Double {
        Date().timeIntervalSince1970 - (Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9)
    }

    /// Whether a lock file was made by the exclusive-create fallback.
    static func isExclusiveLock(_ info: stat) -> Bool {
        info.st_mode & 0o777 == Proxy.exclusiveMode
    }
}

import DroverKernel
import Foundation
import Synchronization

/// A link-based lock this process holds, refreshed and released through its proxy.
final class LinkBasedHeldLock: HeldLock {
    let path: String
    private let proxy: Proxy
    private let mode: LinkBasedLockProvider.Mode
    private let log: LockEventLog
    private let released = Mutex(false)
    let brokeStale: Bool

    init(path: String, proxy: Proxy, mode: LinkBasedLockProvider.Mode, log: LockEventLog, brokeStale: Bool = false) {
        self.path = path
        self.brokeStale = brokeStale
        self.proxy = proxy
        self.mode = mode
        self.log = log
    }

    func refresh() throws -> Bool {
        guard !released.withLock({ $0 }) else { return false }
        // futimens on our own descriptor: it can only ever touch our own inode.
        guard futimens(proxy.descriptor, nil) == 0 else {
            throw LockError(path: path, "cannot refresh the lock (\(String(cString: strerror(errno))))")
        }
        let held = FileIdentity.owns(path, descriptor: proxy.descriptor)
        log.record(held ? "refreshed" : "lost", path: path)
        return held
    }

    func release() throws {
        let first = released.withLock { done in
            defer { done = true }
            return !done
        }
        guard first else { return }
        switch mode {
        case .link:
            // Only our proxy goes; the lock path keeps one link, which reads as free.
            proxy.discard()
        case .exclusiveCreate:
            if FileIdentity.owns(path, descriptor: proxy.descriptor) { unlink(path) }
            proxy.discard()
        }
        log.record("released", path: path)
    }

    deinit {
        try? release()
    }
}

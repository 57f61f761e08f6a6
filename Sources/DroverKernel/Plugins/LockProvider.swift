/// Cross-node locks on shared storage (`lock-type=` in `file-locks`).
///
/// The calls block on file-system I/O. Code on plain threads (the session guard's refresh
/// thread) calls them as they are; async code calls their `…OnOwnThread` forms (below), which
/// run each call on a thread of its own, never on the cooperative pool.
public protocol LockProvider: Sendable {
    /// The name that selected this provider.
    var name: String { get }
    /// Seconds between refreshes a holder owes its lock (`refresh-rate`).
    var refreshInterval: Int { get }
    /// Tries once to take the lock at `path`.
    /// - Returns: the held lock, or nil when someone else holds it.
    /// - Throws: when the attempt failed for another reason than contention (a bad path, a
    ///   full disk, permissions).
    func tryAcquire(_ path: String) throws -> (any HeldLock)?
    /// Whether someone (this process included) holds the lock at `path`, without taking it. A
    /// missing lock file is not locked, and the probe never disturbs a lock this process holds.
    func isLocked(_ path: String) throws -> Bool
}

/// A lock operation that failed for another reason than contention.
public struct LockError: Error, Equatable, CustomStringConvertible {
    public var path: String
    public var message: String

    public init(path: String, _ message: String) {
        self.path = path
        self.message = message
    }

    public var description: String { "lock \(path): \(message)" }
}

/// A lock this process holds. Releasing is idempotent; a lock lost to a stale-lock breaker is
/// never released or refreshed on its successor's behalf.
public protocol HeldLock: AnyObject, Sendable {
    var path: String { get }
    /// Proves liveness to other contenders.
    /// - Returns: false when the lock was lost (taken over after a timeout).
    func refresh() throws -> Bool
    /// Gives the lock up.
    func release() throws
    /// Whether taking it broke a stale lock left by a holder that stopped refreshing (for the
    /// node's metrics). Providers whose locks die with their holder never break one.
    var brokeStale: Bool { get }
}

extension HeldLock {
    public var brokeStale: Bool { false }
}

/// Builds a ``LockProvider`` from `file-locks`.
public protocol LockProviderFactory: Sendable {
    /// The `lock-type=` value that selects this provider.
    static var name: String { get }
    /// Builds the provider; reads only `file-locks`.
    static func make(config: FileLocksConfiguration, context: PluginContext) throws -> any LockProvider
}

/// The async forms: each call on a thread of its own (``onOwnThread(_:)``), for async code (the blocking forms
/// stay for plain threads, such as the guard's refresh thread), so a lock call
/// stuck on a dead mount holds that thread only, never one of the cooperative pool's.
extension LockProvider {
    public func tryAcquireOnOwnThread(_ path: String) async throws -> (any HeldLock)? {
        try await onOwnThread { try self.tryAcquire(path) }
    }

    public func isLockedOnOwnThread(_ path: String) async throws -> Bool {
        try await onOwnThread { try self.isLocked(path) }
    }
}

extension HeldLock {
    public func refreshOnOwnThread() async throws -> Bool {
        try await onOwnThread { try self.refresh() }
    }

    public func releaseOnOwnThread() async throws {
        try await onOwnThread { try self.release() }
    }
}

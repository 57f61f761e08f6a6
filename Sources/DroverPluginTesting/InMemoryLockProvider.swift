public import DroverKernel
import Synchronization

/// A lock provider whose locks live in memory, for tests of code that takes locks. Locks are
/// shared by every provider made from the same ``Table``.
public struct InMemoryLockProvider: LockProvider {
    /// The held locks, by path.
    public final class Table: Sendable {
        let held = Mutex<Set<String>>([])
        public init() {}
    }

    public let name = "memory"
    public let refreshInterval = 1
    public let table: Table

    public init(table: Table = Table()) {
        self.table = table
    }

    public func tryAcquire(_ path: String) throws -> (any HeldLock)? {
        let won = table.held.withLock { $0.insert(path).inserted }
        return won ? Held(path: path, table: table) : nil
    }

    public func isLocked(_ path: String) throws -> Bool {
        table.held.withLock { $0.contains(path) }
    }

    final class Held: HeldLock {
        let path: String
        let table: Table
        let released = Mutex(false)

        init(path: String, table: Table) {
            self.path = path
            self.table = table
        }

        func refresh() throws -> Bool { !released.withLock { $0 } }

        func release() throws {
            let first = released.withLock { done in
                defer { done = true }
                return !done
            }
            if first { _ = table.held.withLock { $0.remove(path) } }
        }
    }
}

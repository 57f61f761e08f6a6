public import DroverKernel
import Foundation
import Synchronization

/// This node's side of the audit log: rows wait in memory and are written in batches (every
/// half second by ``SessionService``, and once more when the node stops), so no state change
/// waits for its audit row, and a burst of three hundred starts writes a few transactions, not
/// three hundred. A registry that cannot be written keeps the rows for the next try, up to
/// ``capacity``; past it the oldest are dropped and the node says how many.
public final class AuditLog: Sendable {
    /// Rows kept while the registry cannot be written.
    static let capacity = 10_000

    private struct Pending {
        var rows: [AuditRecord] = []
        var dropped = 0

        /// Drops the oldest rows past ``AuditLog/capacity``, counting them.
        mutating func trim() {
            guard rows.count > AuditLog.capacity else { return }
            dropped += rows.count - AuditLog.capacity
            rows.removeFirst(rows.count - AuditLog.capacity)
        }
    }

    private let pending = Mutex(Pending())
    private let flushing = Mutex(false)

    public init() {}

    /// Queues one row.
    public func record(_ row: AuditRecord) {
        pending.withLock { pending in
            pending.rows.append(row)
            pending.trim()
        }
    }

    /// Writes what is queued, in order.
    /// - Returns: rows dropped since the last report because the queue was full (to be
    ///   reported now; after a failed write they are reported with a later flush).
    public func flush(to store: any RegistryStore) async -> Int {
        // One writer at a time, so the rows stay in order.
        guard flushing.withLock({ busy in defer { busy = true }; return !busy }) else { return 0 }
        defer { flushing.withLock { $0 = false } }
        let taken = pending.withLock { pending in
            defer { pending = Pending() }
            return pending
        }
        guard !taken.rows.isEmpty else { return taken.dropped }
        do {
            try await store.appendAudit(taken.rows)
            return taken.dropped
        } catch {
            // Back in front of what came meanwhile, for the next try.
            pending.withLock { pending in
                pending.rows = taken.rows + pending.rows
                pending.dropped += taken.dropped
                pending.trim()
            }
            return 0
        }
    }
}

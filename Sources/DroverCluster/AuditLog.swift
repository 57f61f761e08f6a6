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

    private let pending = Mutex<(rows: [AuditRecord], dropped: Int)>(([], 0))
    private let flushing = Mutex(false)

    public init() {}

    /// Queues one row.
    public func record(_ row: AuditRecord) {
        pending.withLock { pending in
            pending.rows.append(row)
            if pending.rows.count > Self.capacity {
                pending.dropped += pending.rows.count - Self.capacity
                pending.rows.removeFirst(pending.rows.count - Self.capacity)
            }
        }
    }

    /// Writes what is queued, in order.
    /// - Returns: rows dropped since the last call because the queue was full (to be reported).
    @discardableResult
    public func flush(to store: any RegistryStore) async -> (written: Int, dropped: Int) {
        // One writer at a time, so the rows stay in order.
        guard flushing.withLock({ busy in defer { busy = true }; return !busy }) else { return (0, 0) }
        defer { flushing.withLock { $0 = false } }
        let (rows, dropped) = pending.withLock { pending in
            defer { pending = ([], 0) }
            return (pending.rows, pending.dropped)
        }
        guard !rows.isEmpty else { return (0, dropped) }
        do {
            try await store.appendAudit(rows)
            return (rows.count, dropped)
        } catch {
            // Back in front of what came meanwhile, for the next try.
            pending.withLock { pending in
                pending.rows = rows + pending.rows
                pending.dropped += dropped
                if pending.rows.count > Self.capacity {
                    pending.dropped += pending.rows.count - Self.capacity
                    pending.rows.removeFirst(pending.rows.count - Self.capacity)
                }
            }
            return (0, 0)
        }
    }
}

import DroverKernel
import Foundation
import Synchronization

/// Keeps the audit log within `audit-retention-days`. One per node (it remembers when it last
/// pruned).
final class AuditPruning: SessionManagerPart {
    let sessions: SessionManager

    init(sessions: SessionManager) {
        self.sessions = sessions
    }
    let auditPrunedAt = Mutex<ContinuousClock.Instant?>(nil)

    /// Removes the audit rows older than `audit-retention-days`, at most every `every`
    /// (an hour; sooner for a retention of less than an hour). Run by ``SessionService``.
    func pruneAudit() async {
        let days = runtime.configuration.server.auditRetentionDays
        guard days > 0 else { return }
        let retention = days * 86_400
        let every = Duration.seconds(min(3600, max(1, retention / 10)))
        let due = auditPrunedAt.withLock { last in
            let now = runtime.clock.now()
            if let last, now - last < every { return false }
            last = now
            return true
        }
        guard due, let now = try? await store.now() else { return }
        _ = try? await store.pruneAudit(before: now.addingTimeInterval(-retention))
    }
}

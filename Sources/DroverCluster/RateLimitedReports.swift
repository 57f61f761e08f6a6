import DroverKernel
import Synchronization

/// At most one report per key (a client address) in each `interval`: a flood of refused
/// requests writes a line a minute, not a line a request. Bounded: past 10,000 keys the oldest
/// are forgotten.
public final class RateLimitedReports: Sendable {
    private let interval: Duration
    private let last = Mutex<[String: ContinuousClock.Instant]>([:])

    public init(every interval: Duration) {
        self.interval = interval
    }

    public func shouldReport(_ key: String, now: ContinuousClock.Instant = .now) -> Bool {
        last.withLock { last in
            if let previous = last[key], now - previous < interval { return false }
            if last.count >= 10_000 {
                let horizon = now - interval
                last = last.filter { $0.value > horizon }
                if last.count >= 10_000 { last.removeAll() }
            }
            last[key] = now
            return true
        }
    }
}

extension NodeRuntime {
    /// Logs a refusal once per `key` (a client address, or a kind of refusal) and interval: a
    /// flood of refused requests writes a line a minute, not a line a request. Every refusal is
    /// counted in the metrics all the same.
    public func reportRefusal(_ event: NodeEvent, key: String) {
        if refusalReports.shouldReport(key) { events.emit(event) } else { metrics.count(event) }
    }
}

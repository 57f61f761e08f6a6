public import DroverKernel
import Synchronization

/// A diagnostics sink that keeps events in memory, for assertions.
public final class InMemoryDiagnosticsSink: DiagnosticsSink {
    public let name = "memory"
    private let stored = Mutex<[DiagnosticsEvent]>([])

    public init() {}

    public func record(_ event: DiagnosticsEvent) {
        stored.withLock { $0.append(event) }
    }

    /// Every event recorded so far, in order.
    public var events: [DiagnosticsEvent] { stored.withLock { $0 } }
}

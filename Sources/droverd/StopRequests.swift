import Foundation
import ServiceLifecycle
import Synchronization
import UnixSignals

/// Catches SIGTERM and SIGINT from the first moment, before the service group exists: the node
/// answers on its port (and may be told to stop) while it is still joining. A stop requested
/// early is handed to the group as soon as it runs, so every stop is graceful.
final class StopRequests: Sendable {
    private struct State {
        var requested = false
        var group: ServiceGroup?
    }

    private let state = Mutex(State())

    /// Starts catching the signals, through UnixSignals as the reload service catches SIGHUP:
    /// they are trapped once this returns. Cancel the returned task when the node has stopped.
    func install() async -> Task<Void, Never> {
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        return Task { [self] in
            for await _ in signals { request() }
        }
    }

    func request() {
        let group = state.withLock { state -> ServiceGroup? in
            state.requested = true
            return state.group
        }
        if let group { Task { await group.triggerGracefulShutdown() } }
    }

    /// From now on stops go to `group`; one already requested goes at once.
    func attach(_ group: ServiceGroup) {
        let requested = state.withLock { state -> Bool in
            state.group = group
            return state.requested
        }
        if requested { Task { await group.triggerGracefulShutdown() } }
    }
}

import Dispatch
import Foundation
import ServiceLifecycle
import Synchronization

/// Catches SIGTERM and SIGINT from the first moment, before the service group exists: the node
/// answers on its port (and may be told to stop) while it is still joining. A stop requested
/// early is handed to the group as soon as it runs, so every stop is graceful.
final class StopRequests: Sendable {
    private struct State {
        var requested = false
        var group: ServiceGroup?
    }

    private let state = Mutex(State())

    /// Starts catching the signals; keep the returned sources alive as long as the node runs.
    func install() -> [any DispatchSourceSignal] {
        [SIGTERM, SIGINT].map { signalNumber -> any DispatchSourceSignal in
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler { [self] in request() }
            source.resume()
            return source
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

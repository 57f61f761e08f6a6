import DroverKernel
import Synchronization

/// Lends a fixed set of slots (database connections) to one caller at a time each. When every
/// slot is lent, callers wait in line; an urgent caller (a node's heartbeat) goes ahead of the
/// ordinary ones, so a burst of ordinary calls (a hundred session starts at 9 a.m.) can never
/// hold a node's liveness back until its peers take it for dead.
public final class SlotPool<Slot: Sendable>: Sendable {
    private struct Waiter {
        var urgent: Bool
        var continuation: CheckedContinuation<Slot, any Error>
    }

    private struct State {
        var idle: [Slot]
        var waiters: [Waiter] = []
        var closed = false
    }

    private let state: Mutex<State>

    public init(_ slots: [Slot]) {
        state = Mutex(State(idle: slots))
    }

    /// A free slot, at once or after waiting; `urgent` callers wait behind urgent ones only.
    /// Throws ``RegistryError/closed`` once the pool is closed.
    public func acquire(urgent: Bool = false) async throws -> Slot {
        try await withCheckedThrowingContinuation { continuation in
            let slot: Result<Slot, any Error>? = state.withLock { state in
                if state.closed { return .failure(RegistryError.closed) }
                if let slot = state.idle.popLast() { return .success(slot) }
                let waiter = Waiter(urgent: urgent, continuation: continuation)
                if urgent, let firstOrdinary = state.waiters.firstIndex(where: { !$0.urgent }) {
                    state.waiters.insert(waiter, at: firstOrdinary)
                } else {
                    state.waiters.append(waiter)
                }
                return nil
            }
            if let slot { continuation.resume(with: slot) }
        }
    }

    /// Gives `slot` back: to the first in line, or to the idle ones.
    public func release(_ slot: Slot) {
        let waiter = state.withLock { state -> Waiter? in
            guard !state.waiters.isEmpty else {
                state.idle.append(slot)
                return nil
            }
            return state.waiters.removeFirst()
        }
        waiter?.continuation.resume(returning: slot)
    }

    /// Refuses every waiting and later caller with ``RegistryError/closed``.
    public func close() {
        let waiters = state.withLock { state -> [Waiter] in
            state.closed = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.continuation.resume(throwing: RegistryError.closed) }
    }

    /// Callers waiting for a slot now.
    public var waiting: Int { state.withLock { $0.waiters.count } }
}

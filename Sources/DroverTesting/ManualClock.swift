public import DroverCluster
import Synchronization

/// A monotonic clock that moves only when the test moves it, as a ``NodeClock`` for a node's
/// parts: what reads `now()` sees the moved time, and what sleeps on it (the node's loops) wakes
/// when the test moves the clock past its instant. postgres-nio's `MockClock` is the model.
public final class ManualClock: Sendable {
    private struct Sleeper {
        let id: Int
        let until: ContinuousClock.Instant
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var now = ContinuousClock.now
        var nextID = 0
        var sleepers: [Sleeper] = []
        /// Instants slept towards that the test has not yet taken with ``nextSleep()``.
        var started: [ContinuousClock.Instant] = []
        var waitingForSleep: CheckedContinuation<ContinuousClock.Instant, any Error>?
    }

    private let state = Mutex(State())

    public init() {}

    public var now: ContinuousClock.Instant { state.withLock { $0.now } }

    /// The clock for a node's runtime (``NodeRuntime/init(setup:store:address:logger:metrics:clock:)``).
    public var nodeClock: NodeClock {
        NodeClock(now: { [self] in now }, sleep: { [self] in try await sleep(until: $0) })
    }

    /// Moves the clock forward and wakes every sleeper whose instant it reached.
    public func advance(_ seconds: Double) {
        let due = state.withLock { state in
            state.now = state.now.advanced(by: .seconds(seconds))
            let now = state.now
            let due = state.sleepers.filter { $0.until <= now }
            state.sleepers.removeAll { $0.until <= now }
            return due
        }
        for sleeper in due { sleeper.continuation.resume() }
    }

    /// Waits until something starts sleeping on the clock, and returns the instant it sleeps
    /// until; each sleep is returned once, in the order they started. Throws when the test's
    /// task is cancelled (a time limit), so a loop that never sleeps again fails the test rather
    /// than hanging it.
    public func nextSleep() async throws -> ContinuousClock.Instant {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                enum Next { case ready(ContinuousClock.Instant), wait, cancelled }
                let next: Next = state.withLock { state in
                    if !state.started.isEmpty { return .ready(state.started.removeFirst()) }
                    if Task.isCancelled { return .cancelled }
                    state.waitingForSleep = continuation
                    return .wait
                }
                switch next {
                case .ready(let instant): continuation.resume(returning: instant)
                case .cancelled: continuation.resume(throwing: CancellationError())
                case .wait: break
                }
            }
        } onCancel: {
            let waiter = state.withLock { state in
                defer { state.waitingForSleep = nil }
                return state.waitingForSleep
            }
            waiter?.resume(throwing: CancellationError())
        }
    }

    /// How many are asleep on the clock now.
    public var sleeping: Int { state.withLock { $0.sleepers.count } }

    func sleep(until instant: ContinuousClock.Instant) async throws {
        let id = state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                enum Next { case now(CheckedContinuation<ContinuousClock.Instant, any Error>?), sleep(CheckedContinuation<ContinuousClock.Instant, any Error>?), cancelled }
                let next: Next = state.withLock { state in
                    if Task.isCancelled { return .cancelled }
                    let waiter = state.waitingForSleep
                    state.waitingForSleep = nil
                    if waiter == nil { state.started.append(instant) }
                    if instant <= state.now { return .now(waiter) }
                    state.sleepers.append(Sleeper(id: id, until: instant, continuation: continuation))
                    return .sleep(waiter)
                }
                switch next {
                case .cancelled: continuation.resume(throwing: CancellationError())
                case .now(let waiter):
                    waiter?.resume(returning: instant)
                    continuation.resume()
                case .sleep(let waiter): waiter?.resume(returning: instant)
                }
            }
        } onCancel: {
            let sleeper = state.withLock { state -> Sleeper? in
                guard let index = state.sleepers.firstIndex(where: { $0.id == id }) else { return nil }
                return state.sleepers.remove(at: index)
            }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }
}

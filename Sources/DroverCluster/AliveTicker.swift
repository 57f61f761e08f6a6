import CShims
import DroverKernel
import DroverSessionProtocol
import Foundation
import Synchronization

/// Tells every running session guard `alive` once a second, from a thread of its own.
///
/// Not from an event loop: a loop busy with a burst of starts or a heavy proxy load would
/// fall silent for seconds and the guards would end healthy sessions. The thread stops with
/// droverd (SIGSTOP stops it too, so a paused node still falls silent) and runs only while
/// some guard is registered. Each guard's control pipe is written through a duplicate of its
/// descriptor that this ticker owns and closes under its lock, so a tick never lands in a
/// descriptor number reused after the guard is gone.
final class AliveTicker: Sendable {
    private struct Guard {
        let descriptor: Int32
        let serving: @Sendable () -> Bool
    }

    private struct State {
        var guards: [Int: Guard] = [:]
        var nextID = 0
        var running = false
    }

    private let state = Mutex(State())
    private static let line = Array(SessionGuardProtocol.Command.alive.line.utf8)
    /// How far behind a tick may fall before it is reported: the guards end their sessions
    /// after `timeout-interval / 2` of silence (3 s with the tests' scaled timeouts).
    static let lateBound = Duration.milliseconds(500)
    /// Told of a tick that woke late or took long (seconds each), with the number of guards.
    private let late: @Sendable (_ late: Double, _ took: Double, _ guards: Int) -> Void

    init(late: @escaping @Sendable (_ late: Double, _ took: Double, _ guards: Int) -> Void = { _, _, _ in }) {
        self.late = late
    }

    /// Starts ticking to `descriptor`, a guard's control pipe, while `serving` says so. The
    /// ticker owns the descriptor from here (the caller passes a close-on-exec duplicate of
    /// its own).
    /// - Returns: the number to ``remove(_:)`` it by once the guard is gone.
    func add(descriptor own: Int32, serving: @escaping @Sendable () -> Bool) -> Int {
        // Shared with the event loop's descriptor, which is non-blocking already: a guard that
        // stopped reading costs a skipped tick, never a stuck ticker.
        _ = fcntl(own, F_SETFL, fcntl(own, F_GETFL) | O_NONBLOCK)
        let (id, startThread) = state.withLock { state -> (Int, Bool) in
            let id = state.nextID
            state.nextID += 1
            state.guards[id] = Guard(descriptor: own, serving: serving)
            defer { state.running = true }
            return (id, !state.running)
        }
        if startThread {
            let thread = Thread { [self] in run() }
            thread.name = "drover-alive"
            thread.start()
        }
        return id
    }

    /// Stops ticking to guard `id` and closes the ticker's descriptor of its pipe.
    func remove(_ id: Int) {
        state.withLock { state in
            if let removed = state.guards.removeValue(forKey: id) { close(removed.descriptor) }
        }
    }

    private func run() {
        // A guard that has just exited leaves a pipe without a reader: the write fails with
        // EPIPE, and the signal stays pending on this thread instead of ending droverd.
        var pipeSignal = sigset_t()
        sigemptyset(&pipeSignal)
        sigaddset(&pipeSignal, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &pipeSignal, nil)
        var next = ContinuousClock.now
        while true {
            next = max(next + .seconds(1), ContinuousClock.now)
            Self.sleep(until: next)
            let woke = ContinuousClock.now
            guard let guards = state.withLock({ state -> [(Int, Guard)]? in
                if state.guards.isEmpty {
                    state.running = false
                    return nil
                }
                return Array(state.guards)
            }) else { return }
            // `serving` takes the node's own lock: asked outside this one.
            let due = Set(guards.filter { $0.1.serving() }.map(\.0))
            state.withLock { state in
                for id in due {
                    guard let entry = state.guards[id] else { continue }
                    _ = Self.line.withUnsafeBytes { write(entry.descriptor, $0.baseAddress, $0.count) }
                }
            }
            let done = ContinuousClock.now
            if woke - next > Self.lateBound || done - woke > Self.lateBound {
                late((woke - next) / .seconds(1), (done - woke) / .seconds(1), guards.count)
            }
        }
    }

    private static func sleep(until deadline: ContinuousClock.Instant) {
        let left = deadline - ContinuousClock.now
        guard left > .zero else { return }
        let (seconds, attoseconds) = left.components
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) < 0, errno == EINTR { request = remaining }
    }
}

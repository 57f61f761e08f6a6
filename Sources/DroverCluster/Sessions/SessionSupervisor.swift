import DroverKernel
import DroverSessionProtocol
import Foundation
import Synchronization

/// Starts the processes of a session and reaches them: in droverd a `drover-session-guard`
/// per session (``GuardLauncher``); in unit tests a fake that reports what the test says.
protocol SessionLauncher: Sendable {
    /// Starts a session for `spec`; its reports go to `report`, in order, ending with
    /// `.ended` and/or `.guardGone`.
    /// - Parameter serving: asked before each sign of life droverd gives the guard; false
    ///   lets the guard end the session (the node is cut off).
    func start(_ spec: SessionGuardProtocol.Spec, serving: @escaping @Sendable () -> Bool,
               report: @escaping @Sendable (SessionEvent) -> Void) async throws -> any SessionControl
    /// Whether the session answers an HTTP request for `path` at its endpoint (a verified
    /// connection: ``SessionConnector``).
    func answers(_ endpoint: SessionEndpoint, path: String) async -> Bool
}

/// droverd's hold on one started session.
protocol SessionControl: Sendable {
    /// Asks for a suspend or quit (the grace to save, then every process ended).
    func stop(_ stop: SessionStop)
    /// Ends it at once, without a grace: for a launch given up or a stop that hung.
    func kill()
}

/// The sessions running on this node, each a ``SessionLifecycle`` driven by its events: the
/// supervisor applies them, wakes whoever waits for a state, and tells the node which
/// sessions ended on their own. It knows nothing of the registry or of other nodes.
final class SessionSupervisor: Sendable {
    struct Supervised: Sendable {
        var state: SessionLifecycle = .launching
        /// Which start of the session this is (``SessionSupervisor/start(_:spec:endpoint:username:stateDirectory:serving:)``
        /// numbers them): the reports of an earlier start's guard are not this one's.
        var launch: UInt64 = 0
        var username: String
        /// Where droverd reaches it; its cgroup is filled in once the guard reports it.
        var endpoint: SessionEndpoint
        var stateDirectory: String
        /// Its session kind.
        var kind: String = SessionKindNames.legacy
        var control: (any SessionControl)?
        /// The guard's report of its end (`.ended`), kept for the log.
        var end: SessionEvent?
        /// Its lock stayed held elsewhere: the start may succeed once that holder lets go.
        var lockWasBusy = false
        /// How its processes are held together (its cgroups' words, or `process-group`), once started.
        var isolation: String?
        /// Its cgroups, once started (where its use is read).
        var cgroups: SessionCgroupSet?
    }

    let launcher: any SessionLauncher
    /// Told of every event, after it was applied (the node's log and diagnostics).
    private let observer: @Sendable (_ id: String, _ event: SessionEvent, _ state: SessionLifecycle) -> Void
    /// Lock refreshes by this node's guards, and those that failed, since the node started.
    private let lockCounts = Mutex((refreshed: 0, failed: 0))
    private let sessions = Mutex<[String: Supervised]>([:])
    /// The number of the last start (``Supervised/launch``).
    private let launches = Atomic<UInt64>(0)
    private let waiters = Mutex<[UUID: (id: String, until: @Sendable (SessionLifecycle) -> Bool, continuation: CheckedContinuation<SessionLifecycle, Never>)]>([:])

    init(launcher: any SessionLauncher,
         observer: @escaping @Sendable (_ id: String, _ event: SessionEvent, _ state: SessionLifecycle) -> Void = { _, _, _ in }) {
        self.launcher = launcher
        self.observer = observer
    }

    /// Lock refreshes by this node's guards, and failed ones, since the node started.
    var lockRefreshes: (refreshed: Int, failed: Int) { lockCounts.withLock { $0 } }

    /// Starts session `id` and waits until its process runs (`.starting`) or it failed.
    /// - Returns: the pid of its main process.
    /// - Throws: ``SessionError/launchFailed(_:)`` with the reason it did not start, or
    ///   ``SessionError/unavailable(_:)`` when its lock stayed held elsewhere.
    func start(_ id: String, spec: SessionGuardProtocol.Spec, endpoint: SessionEndpoint? = nil, username: String, stateDirectory: String,
               serving: @escaping @Sendable () -> Bool) async throws -> Int32 {
        let launch = launches.add(1, ordering: .relaxed).newValue
        let added = sessions.withLock { sessions -> Bool in
            // One start at a time: a second would replace the first one's entry and lose it.
            if let existing = sessions[id], !existing.state.isOver { return false }
            sessions[id] = Supervised(launch: launch, username: username, endpoint: endpoint ?? .guardSocket(spec.socketPath),
                                      stateDirectory: stateDirectory, kind: spec.environment["DROVER_SESSION_KIND"] ?? SessionKindNames.legacy)
            return true
        }
        guard added else { throw SessionError.unavailable("session \(id) is already being started or run on this node") }
        let control: any SessionControl
        do {
            // The guard's reports name this launch: a suspended session resumed on this node at
            // once has a new entry while its last guard's close (`.guardGone`, after its `.ended`)
            // may still be on its way, and that close must not fail the new start.
            control = try await launcher.start(spec, serving: serving) { [weak self] event in self?.apply(event, to: id, launch: launch) }
        } catch {
            forget(id, launch: launch)
            throw error
        }
        sessions.withLock { sessions in
            if sessions[id]?.launch == launch { sessions[id]?.control = control }
        }
        let state = await wait(id) { $0 != .launching }
        guard case .starting(let pid) = state else {
            let lockWasBusy = session(id)?.lockWasBusy ?? false
            // Its own entry only: once over, another start may already have replaced it.
            forget(id, launch: launch)
            // A lock still held elsewhere is a moment's wait (503 and Retry-After), not a fault.
            if case .failedToStart(let why) = state { throw lockWasBusy ? SessionError.unavailable(why) : SessionError.launchFailed(why) }
            throw SessionError.launchFailed("it stopped while it started")
        }
        return pid
    }

    /// Applies `event` to session `id` and wakes the waiters it satisfies.
    /// - Parameter launch: the start whose guard reported `event`; an event of an earlier start
    ///   (``Supervised/launch``) changes nothing. Nil for droverd's own steps, which are the
    ///   current start's.
    func apply(_ event: SessionEvent, to id: String, launch: UInt64? = nil) {
        switch event {
        case .lockRefreshed: lockCounts.withLock { $0.refreshed += 1 }
        case .lockRefreshFailed: lockCounts.withLock { $0.failed += 1 }
        default: break
        }
        guard let state = sessions.withLock({ sessions -> SessionLifecycle? in
            guard let old = sessions[id]?.state, launch == nil || sessions[id]?.launch == launch else { return nil }
            let new = old.next(on: event)
            sessions[id]?.state = new
            if case .ended = event { sessions[id]?.end = event }
            if case .lockBusy = event { sessions[id]?.lockWasBusy = true }
            if case .started(_, let isolation) = event {
                let cgroups = SessionCgroupSet(words: isolation)
                sessions[id]?.isolation = isolation
                sessions[id]?.cgroups = cgroups
                sessions[id]?.endpoint.cgroup = cgroups?.processes
            }
            return new
        }) else { return }
        observer(id, event, state)
        let ready = waiters.withLock { waiters -> [CheckedContinuation<SessionLifecycle, Never>] in
            let ids = waiters.filter { $0.value.id == id && ($0.value.until(state) || state.isOver) }.map(\.key)
            return ids.compactMap { waiters.removeValue(forKey: $0)?.continuation }
        }
        for continuation in ready { continuation.resume(returning: state) }
    }

    /// Waits until session `id`'s state satisfies `until`, or it is over (whatever `until`
    /// says), or it is not supervised (`.finished`).
    func wait(_ id: String, until: @escaping @Sendable (SessionLifecycle) -> Bool) async -> SessionLifecycle {
        let key = UUID()
        return await withCheckedContinuation { continuation in
            let now = state(id) ?? .finished
            if until(now) || now.isOver {
                continuation.resume(returning: now)
                return
            }
            waiters.withLock { $0[key] = (id, until, continuation) }
            // The state may have changed between the check and the registration.
            let again = state(id) ?? .finished
            if until(again) || again.isOver, let waiter = waiters.withLock({ $0.removeValue(forKey: key) }) {
                waiter.continuation.resume(returning: again)
            }
        }
    }

    /// Asked for every proxied request to a session of this node (``hasEnded(_:)``): reads the
    /// one field in place rather than copying the session's record out of the table.
    func state(_ id: String) -> SessionLifecycle? {
        sessions.withLock { sessions in sessions.index(forKey: id).map { sessions.values[$0].state } }
    }
    func session(_ id: String) -> Supervised? { sessions.withLock { $0[id] } }
    var ids: [String] { sessions.withLock { Array($0.keys) } }

    /// How many sessions are in each phase: `starting` (from the launch until they answer),
    /// `running`, `stopping`; those already over are not counted.
    var countsByPhase: [String: Int] {
        sessions.withLock { sessions in
            var counts: [String: Int] = [:]
            for session in sessions.values {
                switch session.state {
                case .launching, .starting: counts["starting", default: 0] += 1
                case .running: counts["running", default: 0] += 1
                case .stopping: counts["stopping", default: 0] += 1
                case .failedToStart, .ended, .finished: break
                }
            }
            return counts
        }
    }

    /// Sessions starting or running here, by kind.
    var countsByKind: [String: Int] {
        sessions.withLock { sessions in
            var counts: [String: Int] = [:]
            for session in sessions.values where !session.state.isOver { counts[session.kind, default: 0] += 1 }
            return counts
        }
    }

    /// The endpoint of session `id` while it runs.
    func runningEndpoint(_ id: String) -> SessionEndpoint? {
        sessions.withLock { $0[id].flatMap { $0.state.isRunning ? $0.endpoint : nil } }
    }

    /// Whether session `id` is supervised here and ended without being asked.
    func hasEnded(_ id: String) -> Bool { state(id)?.needsReaping ?? false }

    /// Sessions that ended without being asked, for the sweep.
    func ended() -> [(id: String, session: Supervised)] {
        sessions.withLock { $0.filter { $0.value.state.needsReaping }.map { ($0.key, $0.value) } }
    }

    /// Asks session `id` to stop and waits until nothing of it is left.
    /// - Returns: its state before the stop (nil if it is not supervised here).
    @discardableResult
    func stop(_ id: String, _ stop: SessionStop) async -> SessionLifecycle? {
        guard let before = state(id) else { return nil }
        apply(.stopRequested(stop), to: id)
        // Told even when it looks over: a guard still starting it ends the start.
        session(id)?.control?.stop(stop)
        _ = await wait(id) { $0.isOver }
        return before
    }

    /// Ends a launch given up: a quit through its guard, a kill if that takes longer than
    /// `bound` seconds; then the session is no longer supervised.
    func abandon(_ id: String, within bound: Double) async {
        let control = session(id)?.control
        apply(.stopRequested(.quit), to: id)
        control?.stop(.quit)
        let killer = Task {
            try await Task.sleep(for: .seconds(bound))
            control?.kill()
        }
        _ = await wait(id) { $0.isOver }
        killer.cancel()
        forget(id)
    }

    /// Stops supervising session `id` (its end was handled); with `launch`, only if that is
    /// still its start.
    func forget(_ id: String, launch: UInt64? = nil) {
        sessions.withLock { sessions in
            guard launch == nil || sessions[id]?.launch == launch else { return }
            sessions.removeValue(forKey: id)
        }
    }
}

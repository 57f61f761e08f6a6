@testable import DroverCluster
import DroverKernel
import DroverSessionProtocol
import Foundation
import DroverTesting
import Synchronization
import Testing

/// A launcher that starts nothing: each start is recorded, and the test reports what the
/// session's guard would (started, ended …) through ``report(_:_:)``.
final class FakeLauncher: SessionLauncher {
    final class Control: SessionControl {
        let commands = Mutex<[String]>([])
        let onKill: @Sendable () -> Void

        init(onKill: @escaping @Sendable () -> Void) {
            self.onKill = onKill
        }

        func stop(_ stop: SessionStop) { commands.withLock { $0.append(stop.rawValue) } }

        func kill() {
            commands.withLock { $0.append("kill") }
            onKill()
        }
    }

    /// Each start's report, by session, oldest first.
    private let reporters = Mutex<[String: [@Sendable (SessionEvent) -> Void]]>([:])
    let controls = Mutex<[String: Control]>([:])
    let answering = Mutex<Set<String>>([])
    /// Reported by the fake guard as soon as it is started, if set.
    let onStart: SessionEvent?

    init(onStart: SessionEvent? = .started(pid: 42, isolation: "fake")) {
        self.onStart = onStart
    }

    func start(_ spec: SessionGuardProtocol.Spec, serving: @escaping @Sendable () -> Bool,
               report: @escaping @Sendable (SessionEvent) -> Void) async throws -> any SessionControl {
        reporters.withLock { $0[spec.sessionID, default: []].append(report) }
        let control = Control { report(.guardGone) }
        controls.withLock { $0[spec.sessionID] = control }
        if let onStart {
            Task {
                try? await Task.sleep(for: .milliseconds(10))
                report(onStart)
            }
        }
        return control
    }

    func answers(_ endpoint: SessionEndpoint, path: String) async -> Bool {
        guard case .guardSocket(let socket) = endpoint.address else { return false }
        return answering.withLock { $0.contains(socket) }
    }

    /// Reports `event` as the guard of session `id`'s start number `launch` (0 the first) would;
    /// by default, its latest start's.
    func report(_ id: String, _ event: SessionEvent, launch: Int? = nil) {
        let reporter = reporters.withLock { reporters -> (@Sendable (SessionEvent) -> Void)? in
            guard let all = reporters[id] else { return nil }
            return launch.map { all[$0] } ?? all.last
        }
        reporter?(event)
    }

    /// How many times session `id` was started.
    func starts(_ id: String) -> Int { reporters.withLock { $0[id]?.count ?? 0 } }

    func commands(_ id: String) -> [String] { controls.withLock { $0[id] }?.commands.withLock { $0 } ?? [] }
}

func spec(_ id: String) -> SessionGuardProtocol.Spec {
    SessionGuardProtocol.Spec(sessionID: id, configDirectory: "/nonexistent", lockPath: "/nonexistent/\(id).lock", lockWait: 1,
                              command: "/bin/true", userName: "nobody", uid: 65534, gid: 65534, home: "/nonexistent",
                              socketPath: "/nonexistent/\(id).sock", environment: [:], stopGrace: 1, droverdSilence: 3)
}

/// ``SessionLifecycle``: every path of a local session, without processes.
@Suite struct SessionLifecycleStateTests {
    @Test func aSessionStartsAnswersAndIsSuspended() {
        var state = SessionLifecycle.launching
        state = state.next(on: .started(pid: 7, isolation: "cgroup"))
        #expect(state == .starting(pid: 7))
        #expect(!state.isRunning)
        state = state.next(on: .answered)
        #expect(state == .running(pid: 7) && state.isRunning)
        state = state.next(on: .stopRequested(.suspend))
        #expect(state == .stopping(pid: 7, .suspend))
        // Its end is the suspend's, not a crash: nothing to reap.
        state = state.next(on: .ended(.suspended, status: 0, detail: ""))
        #expect(state == .finished && !state.needsReaping && state.isOver)
    }

    @Test func anEndWithoutBeingAskedIsReapedOnceRunning() {
        let running = SessionLifecycle.running(pid: 7)
        let exited = running.next(on: .ended(.exited, status: 3 << 8, detail: "the session's main process ended on its own"))
        #expect(exited == .ended(reason: "exited (status 3)", detail: "the session's main process ended on its own"))
        #expect(exited.needsReaping)
        #expect(running.next(on: .ended(.leaseLost, status: -1, detail: "x")) == .ended(reason: "lease-lost", detail: "x"))
        #expect(running.next(on: .ended(.droverdSilent, status: -1, detail: "y")).needsReaping)
        #expect(running.next(on: .guardGone) == .ended(reason: "guard-died", detail: "its guard exited"))
        // The guard's close after its report changes nothing.
        #expect(exited.next(on: .guardGone) == exited)
    }

    @Test func anEndBeforeAnsweringFailsTheStartInsteadOfBeingReaped() {
        #expect(SessionLifecycle.launching.next(on: .lockBusy("held on node 2")) == .failedToStart("held on node 2"))
        #expect(SessionLifecycle.launching.next(on: .guardGone) == .failedToStart("its guard exited before starting it"))
        #expect(SessionLifecycle.launching.next(on: .ended(.failed, status: -1, detail: "cannot make its cgroup"))
                    == .failedToStart("cannot make its cgroup"))
        let failed = SessionLifecycle.starting(pid: 7).next(on: .ended(.exited, status: 256, detail: "the main process ended"))
        #expect(failed == .failedToStart("exited (status 1)"))
        #expect(SessionLifecycle.starting(pid: 7).next(on: .guardGone) == .failedToStart("ended (its guard exited)"))
        #expect(!failed.needsReaping && failed.isOver)
        // Its row was marked running just as it ended: now the sweep frees it.
        #expect(failed.next(on: .answered).needsReaping)
    }

    @Test func stopsOfWhatIsNotRunningAndLateEventsChangeNothingThatMatters() {
        // A stop asked while the guard still starts it: the guard's report ends the launch.
        #expect(SessionLifecycle.launching.next(on: .stopRequested(.quit)) == .launching)
        #expect(SessionLifecycle.starting(pid: 3).next(on: .stopRequested(.quit)) == .stopping(pid: 3, .quit))
        #expect(SessionLifecycle.ended(reason: "lease-lost", detail: "").next(on: .stopRequested(.suspend)) == .finished)
        #expect(SessionLifecycle.finished.next(on: .started(pid: 9, isolation: "")) == .finished)
        #expect(SessionLifecycle.running(pid: 1).next(on: .started(pid: 9, isolation: "")) == .running(pid: 1))
        #expect(SessionLifecycle.stopping(pid: 1, .quit).next(on: .guardGone) == .finished)
    }
}

/// ``SessionSupervisor`` with a fake launcher: events drive it, waiters wake, the sweep sees
/// only sessions that ended on their own.
@Suite struct SessionSupervisorTests {
    func supervised(_ launcher: FakeLauncher, _ id: String) async throws -> (SessionSupervisor, Int32) {
        let supervisor = SessionSupervisor(launcher: launcher)
        let pid = try await supervisor.start(id, spec: spec(id), username: "alice", stateDirectory: "/nonexistent") { true }
        return (supervisor, pid)
    }

    @Test func startWaitsForTheProcessAndRunsOnceAnswered() async throws {
        let launcher = FakeLauncher()
        let (supervisor, pid) = try await supervised(launcher, "s1")
        #expect(pid == 42)
        #expect(supervisor.state("s1") == .starting(pid: 42))
        #expect(supervisor.runningEndpoint("s1") == nil, "no route before it answers")
        supervisor.apply(.answered, to: "s1")
        #expect(supervisor.runningEndpoint("s1") == .guardSocket("/nonexistent/s1.sock"))
        #expect(supervisor.ended().isEmpty)
    }

    @Test func aSecondStartOfARunningSessionIsRefusedAndLosesNothing() async throws {
        let launcher = FakeLauncher()
        let (supervisor, _) = try await supervised(launcher, "s1")
        supervisor.apply(.answered, to: "s1")
        await #expect(throws: SessionError.unavailable("session s1 is already being started or run on this node")) {
            try await supervisor.start("s1", spec: spec("s1"), username: "alice", stateDirectory: "/x") { true }
        }
        #expect(supervisor.state("s1") == .running(pid: 42), "the first one is still supervised")
        #expect(supervisor.runningEndpoint("s1") == .guardSocket("/nonexistent/s1.sock"))
    }

    @Test func aBusyLockFailsTheStartWithItsReasonAsWorthRetrying() async throws {
        let launcher = FakeLauncher(onStart: .lockBusy("its lock stayed held for 11 s"))
        let supervisor = SessionSupervisor(launcher: launcher)
        await #expect(throws: SessionError.unavailable("its lock stayed held for 11 s")) {
            try await supervisor.start("s1", spec: spec("s1"), username: "alice", stateDirectory: "/nonexistent") { true }
        }
    }

    @Test func aSessionThatEndsOnItsOwnIsSweptAndOneStoppedIsNot() async throws {
        let launcher = FakeLauncher()
        let (supervisor, _) = try await supervised(launcher, "crashes")
        _ = try await supervisor.start("suspended", spec: spec("suspended"), username: "bob", stateDirectory: "/x") { true }
        for id in ["crashes", "suspended"] { supervisor.apply(.answered, to: id) }

        launcher.report("crashes", .ended(.leaseLost, status: -1, detail: "no refresh for 5.4 s"))
        #expect(supervisor.hasEnded("crashes"))
        #expect(supervisor.ended().map(\.id) == ["crashes"])

        async let stopped = supervisor.stop("suspended", .suspend)
        try await waitFor { launcher.commands("suspended") == ["suspend"] }
        #expect(supervisor.state("suspended") == .stopping(pid: 42, .suspend))
        // The session exits during its suspend: that is the stop ending, not a crash.
        launcher.report("suspended", .ended(.suspended, status: 0, detail: ""))
        #expect(await stopped == .running(pid: 42))
        #expect(supervisor.state("suspended") == .finished)
        #expect(supervisor.ended().map(\.id) == ["crashes"])
    }

    /// A session suspended here and resumed here at once: its first guard's close arrives while
    /// the second guard still waits for the lock. A proof run saw that close fail the resume
    /// ("its guard exited before starting it") and leave the second guard to start the session
    /// unknown to droverd.
    @Test func anEarlierGuardsLateReportsDoNotReachTheNextStartOfTheSameSession() async throws {
        let launcher = FakeLauncher(onStart: nil)
        let supervisor = SessionSupervisor(launcher: launcher)
        async let first = supervisor.start("s1", spec: spec("s1"), username: "alice", stateDirectory: "/x") { true }
        try await waitFor { launcher.starts("s1") == 1 }
        launcher.report("s1", .started(pid: 7, isolation: "fake"))
        #expect(try await first == 7)
        supervisor.apply(.answered, to: "s1")
        async let stopped = supervisor.stop("s1", .suspend)
        try await waitFor { launcher.commands("s1") == ["suspend"] }
        launcher.report("s1", .ended(.suspended, status: 0, detail: ""))
        #expect(await stopped == .running(pid: 7))

        async let second = supervisor.start("s1", spec: spec("s1"), username: "alice", stateDirectory: "/x") { true }
        try await waitFor { launcher.starts("s1") == 2 }
        // The first guard's pipe closes only now, and it says anything else it had.
        launcher.report("s1", .guardGone, launch: 0)
        launcher.report("s1", .ended(.failed, status: -1, detail: "late"), launch: 0)
        launcher.report("s1", .started(pid: 7, isolation: "fake"), launch: 0)
        #expect(supervisor.state("s1") == .launching)
        launcher.report("s1", .started(pid: 8, isolation: "fake"), launch: 1)
        #expect(try await second == 8)
        supervisor.apply(.answered, to: "s1")
        launcher.report("s1", .guardGone, launch: 0)
        #expect(supervisor.state("s1") == .running(pid: 8))
        // Its own guard's end still counts.
        launcher.report("s1", .guardGone, launch: 1)
        #expect(supervisor.state("s1") == .ended(reason: "guard-died", detail: "its guard exited"))
    }

    @Test func anAbandonedLaunchIsQuitThenKilledWhenItHangs() async throws {
        let launcher = FakeLauncher()
        let (supervisor, _) = try await supervised(launcher, "s1")
        // The fake guard never reports the quit: the supervisor kills it after the bound.
        await supervisor.abandon("s1", within: 0.2)
        #expect(launcher.commands("s1") == ["quit", "kill"])
        #expect(supervisor.state("s1") == nil)
    }

    @Test func leaseReportsAreCountedAndObservedWithoutChangingTheState() async throws {
        let seen = Mutex<[SessionEvent]>([])
        let supervisor = SessionSupervisor(launcher: FakeLauncher()) { _, event, _ in seen.withLock { $0.append(event) } }
        _ = try await supervisor.start("s1", spec: spec("s1"), username: "alice", stateDirectory: "/x") { true }
        supervisor.apply(.answered, to: "s1")
        for event in [SessionEvent.lockRefreshed, .lockRefreshed, .lockRefreshFailed("EROFS")] { supervisor.apply(event, to: "s1") }
        #expect(supervisor.state("s1") == .running(pid: 42))
        #expect(supervisor.lockRefreshes == (2, 1))
        #expect(seen.withLock { $0 }.suffix(3) == [.lockRefreshed, .lockRefreshed, .lockRefreshFailed("EROFS")])
    }

    @Test func waitersWakeOnTheStateTheyWaitFor() async throws {
        let launcher = FakeLauncher(onStart: nil)
        let supervisor = SessionSupervisor(launcher: launcher)
        async let pid = supervisor.start("s1", spec: spec("s1"), username: "alice", stateDirectory: "/x") { true }
        try await waitFor { launcher.commands("s1").isEmpty && supervisor.state("s1") == .launching }
        async let running = supervisor.wait("s1") { $0.isRunning }
        launcher.report("s1", .started(pid: 9, isolation: "process-group"))
        #expect(try await pid == 9)
        supervisor.apply(.answered, to: "s1")
        #expect(await running == .running(pid: 9))
        // A waiter for something that will never come wakes when the session is over.
        async let never = supervisor.wait("s1") { _ in false }
        launcher.report("s1", .guardGone)
        #expect(await never == .ended(reason: "guard-died", detail: "its guard exited"))
    }

    func waitFor(_ condition: () -> Bool) async throws {
        try await eventually("the supervisor's state", timeout: 5, every: .milliseconds(5)) { condition() }
    }
}

/// ``RouteCache`` with a clock moved by hand.
@Suite struct RouteCacheTests {
    final class ManualClock: Sendable {
        let instant = Mutex(ContinuousClock.now)
        func advance(_ duration: Duration) { instant.withLock { $0 += duration } }
        var now: ContinuousClock.Instant { instant.withLock { $0 } }
    }

    @Test func aRouteIsTrustedForItsTimeToLiveOnly() {
        let clock = ManualClock()
        let cache = RouteCache(timeToLive: .seconds(5)) { clock.now }
        cache.remember("s1", .remote(host: "10.0.0.2", port: 8787), username: "alice")
        clock.advance(.milliseconds(4_999))
        #expect(cache.fresh("s1") == RouteCache.Entry(route: .remote(host: "10.0.0.2", port: 8787), username: "alice"))
        clock.advance(.milliseconds(1))
        #expect(cache.fresh("s1") == nil)
        #expect(cache.count == 0, "an expired route is dropped, not kept")
    }

    /// A node that (re)joins has freed its previous run's sessions: the routes to it go, and no other.
    @Test func forgettingTheRoutesToOneNodeKeepsTheOthers() {
        let cache = RouteCache(timeToLive: .seconds(5))
        cache.remember("s1", .remote(host: "10.0.0.2", port: 8787), username: "alice")
        cache.remember("s2", .remote(host: "10.0.0.2", port: 8788), username: "alice")
        cache.remember("s3", .remote(host: "10.0.0.3", port: 8787), username: "bob")
        cache.remember("s4", .local(socket: "/run/s4.sock"), username: "bob")
        cache.forget { if case .remote("10.0.0.2", 8787, _) = $0 { true } else { false } }
        #expect(cache.fresh("s1") == nil)
        #expect(cache.fresh("s2") != nil && cache.fresh("s3") != nil && cache.fresh("s4") != nil)
    }

    @Test func rememberingAgainRenewsAndForgettingDrops() {
        let clock = ManualClock()
        let cache = RouteCache(timeToLive: .seconds(5)) { clock.now }
        cache.remember("s1", .local(socket: "/run/s1.sock"), username: "alice")
        clock.advance(.seconds(4))
        cache.remember("s1", .local(socket: "/run/s1.sock"), username: "alice")
        clock.advance(.seconds(4))
        #expect(cache.fresh("s1")?.route == .local(socket: "/run/s1.sock"))
        cache.forget("s1")
        #expect(cache.fresh("s1") == nil)
    }
}

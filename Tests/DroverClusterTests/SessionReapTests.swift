@testable import DroverCluster
import DroverKernel
import DroverSessionProtocol
import DroverTesting
import Foundation
import Testing

/// ``SessionStops/reapExited()``: the half-second sweep and a request for an ended session both
/// reap, and a session's unasked end is handled once.
@Suite struct SessionReapTests {
    /// A proof run counted one memory-limit end twice, in the metric, the log and the audit:
    /// two passes had both taken the ended session before either forgot it.
    @Test func passesThatMeetTheSameEndedSessionHandleItOnce() async throws {
        let (runtime, config) = try NodeClockTests().runtime(ManualClock())
        _ = config
        let launcher = FakeLauncher()
        let sessions = SessionManager(runtime: runtime, launcher: launcher)
        runtime.update { $0.nodeID = 1 }
        let running = SessionOwnership(node: 1, state: .running)
        for id in ["s1", "s2"] {
            try await runtime.store.createSession(SessionRecord(id: id, username: "alice", ownership: running, createdAt: Date(),
                                                                lastActive: Date(), label: nil, kind: "hog"))
            _ = try await sessions.supervisor.start(id, spec: spec(id), username: "alice", stateDirectory: "/nonexistent") { true }
            sessions.supervisor.apply(.answered, to: id)
        }
        launcher.report("s1", .ended(.memoryLimit, status: -1, detail: "it used more than its memory-limit of 96M"))
        launcher.report("s2", .ended(.exited, status: 1 << 8, detail: "the session's main process ended on its own"))

        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<4 { group.addTask { await sessions.reapExited() } }
        }

        let metrics = String(decoding: runtime.metrics.exposition(sessionsByState: [:], status: nil), as: UTF8.self)
        #expect(metrics.contains(#"drover_session_memory_limit_kills_total{kind="default"} 1"#), "\(metrics.split(separator: "\n").filter { $0.contains("kills") })")
        #expect(metrics.contains(#"drover_session_unasked_ends_total{reason="memory-limit"} 1"#)
                    && metrics.contains(#"drover_session_unasked_ends_total{reason="exited"} 1"#),
                "\(metrics.split(separator: "\n").filter { $0.contains("unasked") })")
        #expect(try await runtime.store.session("s1")?.hold == "it used more than its memory-limit of 96M", "held, not freed by another pass")
        #expect(try await runtime.store.session("s2")?.ownership == SessionOwnership(node: nil, state: .suspended))
        #expect(sessions.supervisor.state("s1") == nil && sessions.supervisor.state("s2") == nil)
    }
}

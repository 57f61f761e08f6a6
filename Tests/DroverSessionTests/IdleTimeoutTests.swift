import DroverKernel
import DroverTesting
import Foundation
import Testing

/// `session-timeout-minutes` (issue 18, item 1) on two real nodes: only client activity (a
/// proxied request, or a frame the client sends through a WebSocket) keeps a session; an open
/// WebSocket alone does not. Activity reaches the session's node through the registry, noted
/// by the node the client reached.
@Suite struct IdleTimeoutTests {
    @Test func onlyClientActivityKeepsASessionFromItsIdleTimeout() async throws {
        // 0.1 minutes: six seconds, so a client that pauses for a second between requests keeps
        // its session even when the loaded machine stalls it for a few more.
        let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2"], backend: .sqlite,
                                            rserver: "session-command=\(demoCommand)\nauth-none=1\nsession-timeout-minutes=0.1\n")
        for index in 0..<2 { try await cluster.start(index) }
        let ids = try await cluster.statuses().reduce(into: [String: Int64]()) { $0[$1.host] = $1.id }
        let (via, other) = (cluster.nodes[0], cluster.nodes[1])
        // Four sessions, all run by the node the client does not talk to.
        #expect(try await cluster.drover(0, ["offline"]).status == 0)
        try await cluster.eventually("node 0 out of placement") {
            try await RawHTTPClient.request(host: via.address, port: via.port, path: "/ready").status == 503
        }
        var sessions: [String] = []
        for _ in 0..<4 {
            let created = try await RawHTTPClient.request("POST", host: via.address, port: via.port, path: "/api/sessions")
            sessions.append(try #require(json(created)["id"] as? String, "\(created.status) \(created.body)"))
        }
        let (requests, frames, openOnly, idle) = (sessions[0], sessions[1], sessions[2], sessions[3])
        #expect(try await listedSessions(via).values.allSatisfy { $0.node == ids[other.address] })
        let talking = try await RawWebSocket.hold(host: via.address, port: via.port, path: "/s/\(frames)/echo")
        let silent = try await RawWebSocket.hold(host: via.address, port: via.port, path: "/s/\(openOnly)/echo")
        defer {
            talking.close()
            silent.close()
        }
        // Fifteen seconds, two and a half timeouts: a request a second to one, a frame a second to
        // another.
        var counted = 0
        for _ in 0..<15 {
            counted = count(try await RawHTTPClient.request("POST", host: via.address, port: via.port, path: "/s/\(requests)/count")) ?? -1
            try await talking.send("still here")
            try await Task.sleep(for: .seconds(1))
        }
        #expect(counted == 15, "every request reached the running session")
        let rows = try await listedSessions(via)
        #expect(rows[requests]?.state == "running" && rows[frames]?.state == "running", "\(rows)")
        #expect(rows[openOnly]?.state == "suspended", "an open WebSocket alone is no activity: \(rows)")
        #expect(rows[idle]?.state == "suspended", "\(rows)")
        // Suspended with its state, for the timeout, in the audit log as the daemon's.
        try await Task.sleep(for: .seconds(1.2))
        let audit = try await cluster.drover(1, ["audit"])
        #expect(audit.stdout.contains("daemon  session-suspend  \(idle)") && audit.stdout.contains("session-timeout-minutes=0.1"), "\(audit.stdout)")
        #expect(!audit.stdout.contains("session-suspend  \(requests)"), "\(audit.stdout)")
        // The dashboard says so too: the policy, and the reason among the recent changes.
        let dashboard = try await RawHTTPClient.request(host: via.address, port: via.port, path: "/admin")
        #expect(dashboard.body.contains("suspended after 0.1 min without client activity")
                && dashboard.body.contains("idle: no client activity"), "\(dashboard.body.suffix(3000))")
        for index in 0..<2 { #expect(try await cluster.stop(index) == 0) }
    }
}

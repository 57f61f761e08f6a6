import DroverKernel
import DroverTesting
import Foundation
import Testing

/// Every state change is one row of the audit log, whoever caused it: a user, an operator or
/// the daemon. Each step below makes one kind of change through real nodes and reads the log
/// with `drover audit --json`, as an operator does.
@Suite(.serialized) struct AuditTests {
    static var backend: TestCluster.Backend {
        get throws { PostgresTestServer.shouldRun ? .postgresql(try PostgresTestServer.required()) : .sqlite }
    }

    /// The rows `drover audit --json` prints, as (actor, action, target, result, reason).
    func rows(_ cluster: TestCluster, _ extra: [String] = []) async throws -> [(actor: String, action: String, target: String, node: Int64?, result: String, reason: String)] {
        let printed = try await cluster.drover(0, ["audit", "--json"] + extra)
        #expect(printed.status == 0, "\(printed.stderr)")
        return try printed.stdout.split(separator: "\n").map { line in
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(line)")
            return (object["actor"] as? String ?? "", object["action"] as? String ?? "", object["target"] as? String ?? "",
                    (object["node"] as? NSNumber)?.int64Value, object["result"] as? String ?? "", object["reason"] as? String ?? "")
        }
    }

    /// Does `step` and returns the rows it added, once `count` of them are there (rows are
    /// written within half a second, in batches), after a moment more for any extra one.
    func added(_ cluster: TestCluster, count: Int, _ step: () async throws -> Void) async throws -> [(actor: String, action: String, target: String, node: Int64?, result: String, reason: String)] {
        try await settled()
        let before = try await rows(cluster).count
        try await step()
        try await cluster.eventually("\(count) audit row(s)", timeout: 30) { (try await rows(cluster).count) >= before + count }
        try await Task.sleep(for: .seconds(1.5))
        return Array(try await rows(cluster).dropFirst(before))
    }

    /// Waits for the rows of what was done so far to be written (every half second).
    func settled() async throws {
        try await Task.sleep(for: .seconds(1.2))
    }

    @Test
    func eachKindOfStateChangeIsExactlyOneRowWithItsActor() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2"], backend: try Self.backend,
                                            rserver: "session-command=\(demoCommand)\nauth-none=1\n")
        for index in 0..<2 { try await cluster.start(index) }
        let ids = try await cluster.statuses().reduce(into: [String: Int64]()) { $0[$1.host] = $1.id }
        let (a, b) = (cluster.nodes[0], cluster.nodes[1])
        let account = SystemUsers.currentName
        // auth-none: the user is droverd's own; the operator is who ran `drover` (under sudo, the one who ran sudo).
        let me = "user:\(account)"
        let admin = "admin:" + (getuid() == 0 ? ProcessInfo.processInfo.environment["SUDO_USER"].flatMap { $0.isEmpty ? nil : $0 } ?? account : account)
        func request(_ method: String = "GET", _ node: ConfigDirectory, _ path: String) async throws -> RawHTTPClient.Response {
            try await RawHTTPClient.request(method, host: node.address, port: node.port, path: path)
        }

        // A user creates a session: one row, naming the node it was placed on.
        var id = ""
        var created = try await added(cluster, count: 1) {
            let answer = try await request("POST", a, "/api/sessions")
            #expect(answer.status == 201)
            id = try #require(json(answer)["id"] as? String)
        }
        var owner = try #require(created.first?.node)
        #expect(created.map { "\($0.actor) \($0.action) \($0.target) \($0.result)" } == ["\(me) session-create \(id) ok"])
        #expect(try await request("POST", a, "/s/\(id)/count").status == 200)

        // The user suspends it, a request resumes it, the user quits it: one row each.
        let suspended = try await added(cluster, count: 1) {
            let answer = try await request("POST", a, "/api/sessions/\(id)/suspend")
            #expect(answer.status == 202)
        }
        #expect(suspended.map { "\($0.actor) \($0.action) \($0.target) \($0.node ?? 0)" } == ["\(me) session-suspend \(id) \(owner)"])
        let resumed = try await added(cluster, count: 1) {
            let answer = try await request("GET", a, "/s/\(id)/count")
            #expect(count(answer) == 1)
        }
        #expect(resumed.map { "\($0.actor) \($0.action) \($0.target)" } == ["\(me) session-resume \(id)"])
        let quit = try await added(cluster, count: 1) {
            let answer = try await request("DELETE", a, "/api/sessions/\(id)")
            #expect(answer.status == 204)
        }
        #expect(quit.map { "\($0.actor) \($0.action) \($0.target)" } == ["\(me) session-quit \(id)"])

        // An operator suspends every session of a node.
        created = try await added(cluster, count: 1) { id = try #require(json(try await request("POST", a, "/api/sessions"))["id"] as? String) }
        owner = try #require(created.first?.node)
        #expect(try await request("POST", a, "/s/\(id)/count").status == 200)
        let ownerIndex = try #require(cluster.nodes.firstIndex { ids[$0.address] == owner })
        let all = try await added(cluster, count: 1) {
            let done = try await cluster.drover(ownerIndex, ["suspend-all"])
            #expect(done.status == 0, "\(done.stderr)")
        }
        #expect(all.map { "\($0.actor) \($0.action) \($0.target)" } == ["\(admin) session-suspend \(id)"])

        // An operator takes a node out of placement and back.
        let offline = try await added(cluster, count: 2) {
            #expect(try await cluster.drover(1, ["offline"]).status == 0)
            try await cluster.eventually("node 2 in offline mode") { try await cluster.statuses().contains { $0.status == "Offline mode" } }
            #expect(try await cluster.drover(1, ["online"]).status == 0)
        }
        #expect(offline.map { "\($0.actor) \($0.action) \($0.target)" }
                == ["\(admin) node-offline node \(ids[b.address]!)", "\(admin) node-online node \(ids[b.address]!)"])

        // The session's process exits on its own: the daemon records its end.
        #expect(count(try await request("GET", a, "/s/\(id)/count")) == 1)
        try await settled()
        owner = try #require(try await rows(cluster).last { $0.target == id }?.node)
        let ended = try await added(cluster, count: 1) {
            let pid = try #require(SystemUsers.runningSessions().first { $0.id == id }?.pid)
            kill(pid, SIGKILL)
        }
        #expect(ended.map { "\($0.actor) \($0.action) \($0.target)" } == ["daemon session-end \(id)"])
        #expect(ended.first?.reason.hasPrefix("exited") == true, "\(ended)")

        // Its node is paused past droverd's silence bound: the guard ends the session (the
        // lease is given up before another node may take it), one row once the node is back.
        #expect(count(try await request("GET", a, "/s/\(id)/count")) == 1, "started again from the state saved when it was suspended")
        try await settled()
        owner = try #require(try await rows(cluster).last { $0.target == id && $0.action == "session-resume" }?.node)
        let pausedIndex = try #require(cluster.nodes.firstIndex { ids[$0.address] == owner })
        let paused = try #require(cluster.process(pausedIndex))
        let silent = try await added(cluster, count: 1) {
            paused.signal(SIGSTOP)
            try await Task.sleep(for: .seconds(4.5))
            paused.signal(SIGCONT)
        }
        #expect(silent.map { "\($0.actor) \($0.action) \($0.target)" } == ["daemon session-end \(id)"])
        #expect(silent.first?.reason.hasPrefix("droverd-silent") == true, "\(silent)")

        // A node killed with a running session: restarted, it recovers the row (one row).
        let running = try await request("GET", a, "/s/\(id)/count")
        #expect(running.status == 200)
        try await settled()
        owner = try #require(try await rows(cluster).last { $0.target == id && $0.action == "session-resume" }?.node)
        let crashed = try #require(cluster.nodes.firstIndex { ids[$0.address] == owner })
        let recovered = try await added(cluster, count: 1) {
            #expect(try await cluster.stop(crashed, signal: SIGKILL) == 128 + SIGKILL)
            try await cluster.start(crashed)
        }
        #expect(recovered.map { "\($0.actor) \($0.action) \($0.target)" } == ["daemon session-recover \(id)"])

        // A session whose node died is moved by the next request (one row), and an operator
        // revokes the user's sign-ins (one row).
        // (Its status and body are in the message: a proof run once saw another answer here.)
        let afterRecovery = try await request("GET", a, "/s/\(id)/count")
        #expect(afterRecovery.status == 200, "\(afterRecovery.status) \(afterRecovery.body)")
        try await settled()
        owner = try #require(try await rows(cluster).last { $0.target == id && $0.action == "session-resume" }?.node)
        let dead = try #require(cluster.nodes.firstIndex { ids[$0.address] == owner })
        let survivor = 1 - dead
        #expect(try await cluster.stop(dead, signal: SIGKILL) == 128 + SIGKILL)
        let moved = try await added(cluster, count: 1) {
            try await cluster.eventually("the session answers on the other node", timeout: 60) {
                (try? await request("GET", cluster.nodes[survivor], "/s/\(id)/count"))?.status == 200
            }
        }
        #expect(moved.map { "\($0.actor) \($0.action) \($0.target) \($0.node ?? 0)" } == ["\(me) session-move \(id) \(ids[cluster.nodes[survivor].address]!)"])
        let revoked = try await added(cluster, count: 1) {
            let done = try await cluster.drover(survivor, ["revoke-user", "alice"])
            #expect(done.status == 0, "\(done.stderr)")
        }
        #expect(revoked.map { "\($0.actor) \($0.action) \($0.target)" } == ["\(admin) user-revoke alice"])

        // The reader's filters.
        #expect(try await rows(cluster, ["--user", "alice"]).map(\.action) == ["user-revoke"])
        #expect(try await rows(cluster, ["--since", "1h"]).count == (try await rows(cluster)).count)
        #expect(try await rows(cluster, ["--limit", "2"]).map(\.action) == ["session-move", "user-revoke"])
        let bad = try await cluster.drover(survivor, ["audit", "--since", "yesterday"])
        #expect(bad.status != 0 && bad.stderr.contains("--since takes a time like"), "\(bad.stderr)")
        #expect(try await cluster.stop(survivor) == 0)
    }

    /// Rows older than `audit-retention-days` are removed by the nodes.
    @Test func rowsPastTheRetentionAreRemoved() async throws {
        // 0.0001 days: 8.6 seconds.
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite,
                                            rserver: "session-command=\(demoCommand)\nauth-none=1\naudit-retention-days=0.0001\n")
        try await cluster.start(0)
        #expect(try await cluster.drover(0, ["revoke-user", "alice"]).status == 0)
        #expect(try await rows(cluster).map(\.action) == ["user-revoke"])
        try await cluster.eventually("the row removed", timeout: 30) { try await rows(cluster).isEmpty }
        #expect(try await cluster.stop(0) == 0)
    }
}

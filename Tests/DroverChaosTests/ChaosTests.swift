import DroverTesting
import Foundation
import Synchronization
import Testing

/// Rounds of SIGKILL and restart of random nodes, one PostgreSQL restart, one droverd paused
/// and one node cut off from the database and its peers, each for one and a half lock
/// timeouts, while two users keep starting, using, suspending and quitting sessions; then the
/// cluster must settle into a consistent state with nothing run twice and no saved state lost.
///
/// The nodes, the database and the users are hosts of a ``NetworkLab`` (network namespaces),
/// so a node can be cut off; where namespaces cannot be made (not root, outside CI) they run
/// on loopback and the partition round is left out.
///
/// Random choices come from a seed printed at the start; `DROVER_CHAOS_SEED=N` repeats a run,
/// `DROVER_CHAOS_ROUNDS=N` runs N rounds instead of eight.
@Suite(.serialized) struct ChaosTests {
    @Test(.enabled(if: PostgresTestServer.shouldRun))
    func killedNodesAndADatabaseRestartLoseNothingAndRunNothingTwice() async throws {
        try await HeavyTests.run(.cores(0.6)) { try await campaign() }
    }

    func campaign() async throws {
        let seed = ProcessInfo.processInfo.environment["DROVER_CHAOS_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 1...UInt64.max)
        print("chaos: seed \(seed) (DROVER_CHAOS_SEED=\(seed) repeats these choices)")
        var random = SplitMix64(seed: seed)
        let hosts = ["n1", "n2", "n3"]
        let lab = NetworkLab.shouldRun ? try await NetworkLab(hosts: ["db", "client"] + hosts) : nil
        let database = if let lab {
            try await PrivatePostgres(listenAddress: lab.address("db"), networkNamespace: lab.namespace("db"))
        } else {
            try await PrivatePostgres()
        }
        let client = lab?.namespace("client")
        let cluster = try await TestCluster(addresses: lab.map { lab in hosts.map(lab.address) } ?? ["127.0.0.1", "127.0.0.2", "127.0.0.3"],
                                            backend: .postgresql(database.server), loadBalancer: TestCluster.scaledLoadBalancer,
                                            rserver: "session-command=\(Executable.pathForUsers("drover-demo-session"))\nauth-none=1\nauth-none-allow-anyone-on-the-network=1\n",
                                            clientNamespace: client, launchers: lab.map { hosts.map($0.launcher) } ?? [])
        for index in 0..<3 { try await cluster.start(index) }

        let users = (0..<2).map { _ in ChaosUser(nodes: cluster.nodes, seed: random.next(), networkNamespace: client) }
        for user in users { user.start() }
        // Throughout: no session id may ever have two processes. Only this test's sessions are
        // judged (below): another test shows on purpose that the check can fail.
        let doubles = DoubleWatcher()
        // Eight rounds in the test command; DROVER_CHAOS_ROUNDS=N for a longer campaign.
        let rounds = max(2, ProcessInfo.processInfo.environment["DROVER_CHAOS_ROUNDS"].flatMap(Int.init) ?? 8)
        let databaseRound = Int.random(in: 1..<rounds, using: &random)
        // One round pauses a node's droverd (SIGSTOP) for one and a half lock timeouts: its
        // guards end its sessions, which move; when it runs again nothing may run twice.
        let pauseRound = (databaseRound + Int.random(in: 1..<rounds, using: &random)) % rounds
        // One round cuts a node off from the database and its peers (its shared storage stays):
        // it lets its sessions end, which move; when it is back nothing may run twice.
        var partitionRound = (pauseRound + Int.random(in: 1..<rounds, using: &random)) % rounds
        if partitionRound == databaseRound { partitionRound = (partitionRound + 1) % rounds }
        if partitionRound == pauseRound { partitionRound = (partitionRound + 1) % rounds }
        for round in 0..<rounds {
            try await Task.sleep(for: .milliseconds(Int.random(in: 1500...3500, using: &random)))
            if round == databaseRound {
                print("chaos: round \(round): restarting PostgreSQL")
                try await database.server.restart()
                continue
            }
            if round == partitionRound, let lab, partitionRound != databaseRound, partitionRound != pauseRound {
                let host = hosts[Int.random(in: 0..<3, using: &random)]
                print("chaos: round \(round): cutting \(host) off for 9 s")
                try await lab.cut(host)
                try await Task.sleep(for: .seconds(9))
                try await lab.heal(host)
                continue
            }
            if round == pauseRound, let paused = cluster.process(Int.random(in: 0..<3, using: &random)) {
                print("chaos: round \(round): SIGSTOP droverd \(paused.pid) for 9 s")
                paused.signal(SIGSTOP)
                try await Task.sleep(for: .seconds(9))
                paused.signal(SIGCONT)
                continue
            }
            let victim = Int.random(in: 0..<3, using: &random)
            let down = Int.random(in: 300...3000, using: &random)
            print("chaos: round \(round): SIGKILL node \(victim), down for \(down) ms")
            #expect(try await cluster.stop(victim, signal: SIGKILL) == 128 + SIGKILL)
            try await Task.sleep(for: .milliseconds(down))
            try await cluster.start(victim)
        }
        try await Task.sleep(for: .seconds(2))
        var model: [String: SessionModel] = [:]
        for user in users {
            model.merge(await user.stop()) { first, _ in first }
            print("chaos: a user: \(user.summary)")
            #expect(user.wrongEchoes.withLock { $0 }.isEmpty, "WebSocket echoes garbled: \(user.wrongEchoes.withLock { $0.prefix(3) })")
            #expect(user.summary.hasPrefix("0 sessions") == false, "the user managed to start sessions")
        }
        let name = try #require(cluster.databaseName)

        // Every running node is Online again.
        try await cluster.eventually("every node Online", timeout: 20) {
            try await cluster.statuses().allSatisfy { $0.status == "Online" }
        }
        let ids = try await cluster.statuses().map(\.id)
        #expect(ids.count == 3)

        // Calls that got no answer leave the user unsure: a quit without an answer took effect
        // if the row is gone; a start without an answer may have made a session they never saw.
        let stored = Set(try await sessionRows(database.server, name).map(\.id))
        for (id, session) in model where session.quitUnanswered && !stored.contains(id) { model[id]?.quit = true }
        for id in stored where model[id] == nil { model[id] = SessionModel() }
        let ranTwice = doubles.stop().intersection(model.keys)
        #expect(ranTwice.isEmpty, "sessions ran twice at once: \(ranTwice)")

        // Every live session answers, with no saved state lost and nothing counted twice.
        let node0 = cluster.nodes[0]
        var counts: [String: Int] = [:]
        for (id, session) in model where !session.quit {
            var last = ""
            do {
                try await cluster.eventually("session \(id.prefix(6)) answers", timeout: 30) {
                    let answer = try await RawHTTPClient.request(host: node0.address, port: node0.port, path: "/s/\(id)/count", timeout: 15,
                                                                 networkNamespace: client)
                    last = "\(answer.status) \(answer.body.prefix(300).replacingOccurrences(of: "\n", with: " "))"
                    guard answer.status == 200, let value = (try? JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any])?["count"] as? Int else { return false }
                    counts[id] = value
                    return true
                }
            } catch {
                let row = try await sessionRows(database.server, name).first { $0.id == id }
                throw TestFailure("\(error); last answer \(last); row \(row.map(String.init(describing:)) ?? "none"); nodes \(try await cluster.statuses())")
            }
            let count = try #require(counts[id])
            #expect(count >= session.highestSaved, "session \(id.prefix(6)) lost saved state: count \(count), saved \(session.highestSaved)")
            #expect(count <= session.incrementsSent, "session \(id.prefix(6)) counted \(count) of \(session.incrementsSent) increments")
            #expect(session.savedWentBack == nil, "session \(id.prefix(6)) saved state went back: \(session.savedWentBack ?? "")")
        }

        // The registry and the processes agree: each running row's process runs once, on its
        // owner, and no other session process exists.
        try await cluster.eventually("no session between states", timeout: 20) {
            try await sessionRows(database.server, name).allSatisfy { $0.state == "running" || $0.state == "suspended" }
        }
        let rows = try await sessionRows(database.server, name)
        let running = SystemUsers.runningSessionIDs().filter { model[$0] != nil }
        #expect(running.count == Set(running).count, "a session runs twice: \(running.sorted())")
        #expect(Set(running) == Set(rows.filter { $0.state == "running" }.map(\.id)), "processes \(running.sorted()) vs rows \(rows)")
        for row in rows {
            #expect(model[row.id]?.quit == false, "row of a quit or unknown session: \(row)")
            if row.state == "running" {
                #expect(row.node.map(ids.contains) == true, "running on a node that is not in the cluster: \(row)")
                #expect(row.pid.map { sessionID(ofProcess: $0) == row.id } == true, "pid of \(row) is not that session's process")
            } else {
                #expect(row.node == nil && row.pid == nil, "a suspended row keeps an owner: \(row)")
            }
        }
        #expect(Set(rows.map(\.id)) == Set(model.filter { !$0.value.quit }.keys), "every live session has its row, and only those")

        // Suspending everything now saves exactly the counts just read.
        for (id, _) in counts {
            #expect(try await RawHTTPClient.request("POST", host: node0.address, port: node0.port, path: "/api/sessions/\(id)/suspend",
                                                    networkNamespace: client).status == 202)
        }
        try await cluster.eventually("every session suspended", timeout: 30) {
            try await sessionRows(database.server, name).allSatisfy { $0.state == "suspended" }
        }
        for (id, count) in counts {
            #expect(DemoSessionState.savedCount(id) == count, "session \(id.prefix(6)) saved \(DemoSessionState.savedCount(id) ?? -1), expected \(count)")
        }
        for index in 0..<3 { #expect(try await cluster.stop(index) == 0) }
        #expect(SystemUsers.runningSessionIDs().filter { model[$0] != nil }.isEmpty)
        for (id, session) in model where session.quit {
            #expect(DemoSessionState.savedCount(id) == nil, "a quit session's state is removed")
        }
        for (id, _) in counts { DemoSessionState.remove(id) }
    }
}

/// A session row as stored.
struct SessionRow: CustomStringConvertible {
    var id: String
    var node: Int64?
    var state: String
    var pid: Int32?
    var description: String { "\(id.prefix(6)) \(state) node=\(node.map(String.init) ?? "-") pid=\(pid.map(String.init) ?? "-")" }
}

func sessionRows(_ server: PostgresTestServer, _ database: String) async throws -> [SessionRow] {
    let text = try await server.psql(database, "SELECT id, coalesce(node_id::text, ''), state, coalesce(pid::text, '') FROM session ORDER BY id")
    return text.split(separator: "\n").map { line in
        let fields = line.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
        return SessionRow(id: fields[0], node: Int64(fields[1]), state: fields[2], pid: Int32(fields[3]))
    }
}

/// The DROVER_SESSION_ID of a running process, from /proc.
func sessionID(ofProcess pid: Int32) -> String? {
    guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return nil }
    let prefix = Array("DROVER_SESSION_ID=".utf8)
    return data.split(separator: 0).first { $0.starts(with: prefix) }.map { String(decoding: $0.dropFirst(prefix.count), as: UTF8.self) }
}

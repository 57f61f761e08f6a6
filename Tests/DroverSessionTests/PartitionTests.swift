import DroverTesting
import Foundation
import Testing

/// A node cut off by the network, tested as separate hosts: every node, the PostgreSQL server
/// and the test's own client are hosts of a ``NetworkLab`` (network namespaces on a private
/// bridge), at the operator's default proportions scaled down together.
@Suite struct PartitionTests {
    /// Cuts the node owning some sessions off from the database and its peer (not from the
    /// shared storage) while a user keeps asking for its sessions through the other node, for
    /// three lock timeouts; then heals it. A watcher sampling /proc every 100 ms must never see
    /// a session running twice; every session of the cut node must answer through the other
    /// one meanwhile (the cut node lets them end, see `NodeRuntime.isCutOff`), and every
    /// session must answer through both nodes afterwards.
    @Test(.enabled(if: NetworkLab.shouldRun && PostgresTestServer.shouldRun))
    func aNodeCutOffFromTheDatabaseAndItsPeerLetsItsSessionsMoveAndNoneRunsTwice() async throws {
        try await HeavyTests.run(.cores(0.1)) { try await cutOffOwner() }
    }

    func cutOffOwner() async throws {
        let hosts = ["n1", "n2"]
        let lab = try await NetworkLab(hosts: ["db", "client"] + hosts)
        let postgres = try await PrivatePostgres(listenAddress: lab.address("db"), networkNamespace: lab.namespace("db"))
        let client = lab.namespace("client")
        let cluster = try await TestCluster(addresses: hosts.map(lab.address), backend: .postgresql(postgres.server),
                                            rserver: "session-command=\(demoCommand)\nauth-none=1\nauth-none-allow-anyone-on-the-network=1\n", clientNamespace: client,
                                            launchers: hosts.map(lab.launcher))
        for index in hosts.indices { try await cluster.start(index) }
        let sessions = try await startSessions(cluster, count: 6)
        let cut = try #require(sessions.first?.owner)
        let theirs = sessions.filter { $0.owner == cut }
        let other = cluster.nodes[1 - cut]
        func answers(_ id: String, via node: ConfigDirectory) async throws -> Bool {
            try await RawHTTPClient.request(host: node.address, port: node.port, path: "/s/\(id)/count", timeout: 10,
                                            networkNamespace: client).status == 200
        }
        for session in sessions { #expect(try await answers(session.id, via: other), "every session answers before the cut") }

        let watcher = DoubleWatcher(sessions.map(\.id))
        watcher.start()
        try await lab.cut(hosts[cut])
        let cutAt = Date()
        // While the cut lasts nothing reaches the cut node, so an answer through the other node
        // comes from a session that moved there. The bound: the cut node counts itself cut off
        // after 3 s (2 heartbeats + 1 s), its guards end the sessions 3 s later
        // (timeout-interval/2), and the new owner starts them; 15 s leaves room for a slow
        // machine and still ends before the heal.
        var moved = 0
        for session in theirs {
            let left = 15 - Date().timeIntervalSince(cutAt)
            try await cluster.eventually("session \(session.id.prefix(6)) answers through the other node during the cut", timeout: max(0.1, left)) {
                try await answers(session.id, via: other)
            }
            moved += 1
        }
        let movedWithin = Date().timeIntervalSince(cutAt)
        // Three lock timeouts (timeout-interval=6) cut off in all.
        let remaining = 18 - Date().timeIntervalSince(cutAt)
        if remaining > 0 { try await Task.sleep(for: .seconds(remaining)) }
        try await lab.heal(hosts[cut])

        for session in sessions {
            for node in cluster.nodes {
                try await cluster.eventually("session \(session.id.prefix(6)) answers through \(node.address) after the heal", timeout: 45) {
                    try await answers(session.id, via: node)
                }
            }
        }
        let doubles = watcher.stop()
        #expect(moved == theirs.count)
        #expect(doubles.isEmpty, "sessions ran twice: \(doubles)")
        let stderr = cluster.process(cut)?.stderr ?? ""
        #expect(stderr.contains("reaches neither the registry nor any peer"), "the cut node let its sessions go: \(stderr.suffix(2000))")
        #expect(stderr.contains("event=alive-withheld"), "the cut node said it stopped feeding its guards: \(stderr.suffix(2000))")
        print("partition: \(theirs.count) session(s) of the cut node answered through the other within \(String(format: "%.1f", movedWithin)) s")
        for index in hosts.indices { _ = try await cluster.stop(index) }
    }
}

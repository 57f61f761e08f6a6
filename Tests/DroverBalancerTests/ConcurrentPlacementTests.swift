import DroverKernel
import DroverPlugins
import DroverTesting
import Foundation
import Logging
import Testing

enum PlacementBackend: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite, postgresql
    var testDescription: String { rawValue }
    static var enabled: [PlacementBackend] { PostgresTestServer.shouldRun ? allCases : [.sqlite] }
}

/// A configuration directory on a fresh registry with three fresh, online nodes.
func placementCluster(_ backend: PlacementBackend, loadBalancer: String = "heartbeat-interval=30\n",
                      kinds: @escaping (Int) -> [String] = { _ in ["default"] }) async throws -> (TemporaryDirectory, any RegistryStore) {
    let dir = TemporaryDirectory(prefix: "drover-place")
    try dir.write("rserver.conf", "server-data-dir=data\nserver-shared-storage-path=shared\n")
    try dir.write("load-balancer", loadBalancer)
    try dir.write("secure-cookie-key", TestCluster.defaultKey + "\n", mode: 0o600)
    switch backend {
    case .sqlite:
        try dir.write("database.conf", "provider=sqlite\nconnection-timeout-seconds=30\n")
    case .postgresql:
        let server = try PostgresTestServer.required()
        try dir.write("database.conf", server.databaseConf(try await server.createDatabase(prefix: "drover_place")))
    }
    let config = try DroverConfiguration.load(directory: dir.path, pluginKeys: PluginCatalog.builtin.loadBalancerPluginKeys)
    let context = PluginContext(configDirectory: dir.path, dataDirectory: config.server.dataDirectory, secureCookieKey: nil, logger: Logger(label: "t"))
    let store = try PluginCatalog.builtin.registryStore(for: config.database).make(config: config.database, context: context)
    try await store.migrate()
    for n in 1...3 {
        _ = try await store.registerNode(NodeRegistration(host: "127.0.0.\(n)", ipv4: "127.0.0.\(n)", port: 8787, status: .online,
                                                          cpus: 2, version: "t", configHash: "h", launcherFingerprint: nil, kinds: kinds(n)))
    }
    return (dir, store)
}

@Suite struct ConcurrentPlacementTests {
    @Test(arguments: PlacementBackend.enabled)
    func threeHundredRacingPlacementsFromThreeProcessesEndWithinOneOfEven(backend: PlacementBackend) async throws {
        let (dir, store) = try await placementCluster(backend)
        let start = Date().timeIntervalSince1970 + 2
        let placers = try (0..<3).map { _ in
            try RunningProcess("drover-probe", ["place", "--config-dir", dir.path, "--count", "100", "--at", String(start)])
        }
        for placer in placers {
            #expect(try await placer.wait(timeout: 120) == 0, "\(placer.stderr)")
            #expect(placer.stdout == "placed 100\n")
        }
        let counts = try await store.activeSessionCounts()
        #expect(counts.values.reduce(0, +) == 300)
        #expect(counts.values.max()! - counts.values.min()! <= 1, "\(counts)")
        await store.close()
    }
}

@Suite struct PlaceCommandTests {
    @Test func placeExplainsEveryNodeAndTheChoice() async throws {
        let (dir, store) = try await placementCluster(.sqlite)
        _ = try await store.setNodeStatus(.offlineMode, node: 3)
        for n in 0..<2 {
            try await store.createSession(SessionRecord(id: "s\(n)", username: "bob", ownership: SessionOwnership(node: 1, state: .running),
                                                        createdAt: Date(), lastActive: Date(), label: nil))
        }
        await store.close()
        let text = try await Executable.run("drover", ["place", "--user", "alice", "--config-dir", dir.path])
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout == """
            Balancer: sessions   User: alice
            Node  Address         Score
            1     127.0.0.1:8787  2 sessions, load 0.0
            2     127.0.0.2:8787  0 sessions, load 0.0   <- chosen
            3     127.0.0.3:8787  excluded: in offline mode
            Choice: node 2 (127.0.0.2:8787)

            """)
        let json = try await Executable.run("drover", ["place", "--user", "alice", "--json", "--config-dir", dir.path])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(object["chosen"] as? Int == 2)
        #expect((object["nodes"] as? [[String: Any]])?.map { $0["excluded"] as? String } == [nil, nil, "in offline mode"])
    }

    @Test func placeTakesTheKindAndExcludesTheNodesThatCannotRunIt() async throws {
        let (dir, store) = try await placementCluster(.sqlite) { $0 == 2 ? ["default"] : ["default", "jupyterlab"] }
        await store.close()
        let text = try await Executable.run("drover", ["place", "--user", "alice", "--kind", "jupyterlab", "--config-dir", dir.path])
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout == """
            Balancer: sessions   User: alice   Kind: jupyterlab
            Node  Address         Score
            1     127.0.0.1:8787  0 sessions, load 0.0   <- chosen
            2     127.0.0.2:8787  excluded: unable to run 'jupyterlab' sessions (it offers default)
            3     127.0.0.3:8787  0 sessions, load 0.0
            Choice: node 1 (127.0.0.1:8787)

            """)
        let none = try await Executable.run("drover", ["place", "--user", "alice", "--kind", "rstudio", "--json", "--config-dir", dir.path])
        #expect(none.status == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(none.stdout.utf8)) as? [String: Any])
        #expect(object["kind"] as? String == "rstudio" && (object["error"] as? String)?.contains("unable to run 'rstudio' sessions") == true)
    }

    @Test func placeWithNoCandidateSaysWhyForEachNode() async throws {
        let (dir, store) = try await placementCluster(.sqlite, loadBalancer: "balancer=user-hash\n")
        for n in 1...3 { _ = try await store.setNodeStatus(n == 2 ? .offline : .offlineMode, node: Int64(n)) }
        await store.close()
        let result = try await Executable.run("drover", ["place", "--user", "alice", "--config-dir", dir.path])
        #expect(result.status == 1)
        #expect(result.stdout.contains("Choice: none — no node can take a new session: node 1 (127.0.0.1:8787) is in offline mode; node 2 (127.0.0.2:8787) is Offline; node 3 (127.0.0.3:8787) is in offline mode"))
    }
}

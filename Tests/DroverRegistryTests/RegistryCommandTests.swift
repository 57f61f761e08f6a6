import DroverKernel
import DroverTesting
import Foundation
import Testing

@Suite struct RegistryCommandTests {
    @Test(arguments: StoreKind.enabled.filter { $0 != .memory })
    func listNodesPrintsTheSeedLayoutWithoutADaemon(kind: StoreKind) async throws {
        let harness = try await Harness(kind)
        let store = try await harness.store()
        let empty = try await Executable.run("drover", ["list-nodes", "--config-dir", harness.config.path])
        #expect(empty.status == 0, "\(empty.stderr)")
        #expect(empty.stdout.hasPrefix("Cluster\n-------\nProtocol\n(not defined"))

        try await store.defineCluster(ClusterRecord(keyHash: harness.key.clusterHash, protocol: .http, definedAt: Date(), definedByNode: 1))
        var primary = RegistryConformance.registration("rsw-primary", port: 80)
        primary.ipv4 = "172.98.8.241"
        let first = try await store.registerNode(primary)
        var stale = RegistryConformance.registration("rsw-secondary")
        stale.ipv4 = nil
        // A node of the next release, half-way through a rolling upgrade.
        (stale.version, stale.protocolVersion) = ("1.1", 2)
        let second = try await store.registerNode(stale)
        _ = try await store.setNodeStatus(.invalidSecureCookieKey, node: second.id)
        await store.close()

        let result = try await Executable.run("drover", ["list-nodes", "--config-dir", harness.config.path], environment: ["TZ": "UTC"])
        #expect(result.status == 0, "\(result.stderr)")
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MMM-dd HH:mm:ss"
        let expected = """
            Cluster
            -------
            Protocol
            Http

            Nodes
            -----
            ID  Host           IPv4           Port  Status                     Last Seen             Version
            \(first.id)   rsw-primary    172.98.8.241   80    Online                     \(formatter.string(from: first.lastSeen))  1.0 (protocol 1)
            \(second.id)   rsw-secondary                 8787  Invalid secure cookie key  \(formatter.string(from: second.lastSeen))  1.1 (protocol 2)

            """
        #expect(result.stdout == expected)

        let json = try await Executable.run("drover", ["--config-dir", harness.config.path, "list-nodes", "--json"])
        #expect(json.status == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let nodes = try #require(object["nodes"] as? [[String: Any]])
        #expect(nodes.map { $0["host"] as? String } == ["rsw-primary", "rsw-secondary"])
        #expect(nodes.map { $0["status"] as? String } == ["Online", "Invalid secure cookie key"])
        #expect((object["cluster"] as? [String: Any])?["protocol"] as? String == "http")
        #expect(nodes.map { $0["version"] as? String } == ["1.0", "1.1"])
        #expect(nodes.map { $0["protocol_version"] as? Int } == [1, 2])
    }

    /// `migrate-db --status` shows the schema's steps without changing anything; `migrate-db`
    /// runs what this build has pending (here nothing to contract: the steps so far are all
    /// expansions, which a node's start runs). The expand/contract rules themselves:
    /// `SchemaStepsTests`.
    @Test func migrateDBShowsTheSchemaStepsAndRunsWhatIsPending() async throws {
        let config = try ConfigDirectory()
        let fresh = try await Executable.run("drover", ["migrate-db", "--status", "--config-dir", config.path])
        #expect(fresh.status == 0, "\(fresh.stderr)")
        #expect(fresh.stdout.hasPrefix("Registry schema 0; this build knows 10.\n"), "\(fresh.stdout)")
        #expect(fresh.stdout.contains("\nPending: 1 (expand), 2 (expand), 3 (expand), 4 (expand), 5 (expand), 6 (expand), 7 (expand), 8 (expand), 9 (expand), 10 (expand).\n"),
                "\(fresh.stdout)")
        #expect(try await Executable.run("drover", ["migrate-db", "--status", "--config-dir", config.path]).stdout == fresh.stdout, "--status changed the registry")

        let run = try await Executable.run("drover", ["migrate-db", "--config-dir", config.path])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout == "The registry's schema is this build's already; nothing to do.\n")
        let after = try await Executable.run("drover", ["migrate-db", "--status", "--config-dir", config.path])
        let lines = after.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.first == "Registry schema 10; this build knows 10.")
        #expect(lines.contains("1     expand    (not recorded: before step 10)"), "\(after.stdout)")
        #expect(lines.contains { $0.hasPrefix("10    expand    20") }, "step 10 and its time: \(after.stdout)")
        #expect(after.stdout.hasSuffix("\nPending: none.\n"))

        let both = try await Executable.run("drover", ["migrate-db", "--status", "--from-sqlite", "/x.sqlite", "--config-dir", config.path])
        #expect(both.status == 2 && both.stderr.contains("--status and --from-sqlite do different things"), "\(both.stderr)")
    }

    @Test func listNodesShowsAStaleOnlineNodeAsUnreachable() async throws {
        let harness = try await Harness(.sqlite)
        try harness.config.write("load-balancer", "heartbeat-interval=1\n")
        try harness.config.write("rserver.conf", "server-data-dir=data\nserver-shared-storage-path=shared\n")
        let store = try await harness.store()
        _ = try await store.registerNode(RegistryConformance.registration("gone"))
        await store.close()
        try await Task.sleep(for: .milliseconds(3300))
        let result = try await Executable.run("drover", ["list-nodes", "--config-dir", harness.config.path])
        #expect(result.stdout.contains("  Unreachable  "))
    }

    @Test func listNodesFailsWithStatusOneWhenTheDatabaseIsUnreachable() async throws {
        let dir = try ConfigDirectory()
        try dir.write("load-balancer", "")
        try dir.write("database.conf", "provider=postgresql\nhost=127.0.0.1\nport=\(try FreePort.find())\nconnection-timeout-seconds=1\n")
        let result = try await Executable.run("drover", ["list-nodes", "--config-dir", dir.path], timeout: 90)
        #expect(result.status == 1)
        #expect(result.stderr.contains("cannot connect to PostgreSQL at 127.0.0.1:"))
    }

    @Test func encryptPasswordReadsStandardInputAndRoundTrips() async throws {
        let dir = try ConfigDirectory()
        let result = try await Executable.run("drover", ["encrypt-password", "--config-dir", dir.path], stdin: "hunter2-Long\n")
        #expect(result.status == 0, "\(result.stderr)")
        let line = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(line.hasPrefix("encrypted:"))
        #expect(!line.contains("hunter2"))
        let key = try SecureCookieKey.load(from: dir.directory.url("secure-cookie-key"))
        #expect(try DatabasePassword(configValue: line).reveal(key: key, source: ConfigSource(file: "d")) == "hunter2-Long")
        let empty = try await Executable.run("drover", ["encrypt-password", "--config-dir", dir.path], stdin: "")
        #expect(empty.status == 2)
    }

    @Test(.enabled(if: PostgresTestServer.shouldRun))
    func migrateDBCopiesVerifiesAndRefusesANonEmptyTargetWithoutForce() async throws {
        let sqlite = try await Harness(.sqlite)
        let source = try await sqlite.store()
        let a = try await source.registerNode(RegistryConformance.registration("a"))
        let b = try await source.registerNode(RegistryConformance.registration("b"))
        _ = try await source.deleteNode(a.id)
        try await source.defineCluster(ClusterRecord(keyHash: "h", protocol: .https, definedAt: Date(), definedByNode: b.id))
        for n in 0..<5 { try await source.createSession(RegistryConformance.newSession("s\(n)", node: b.id, state: .running)) }
        await source.close()

        let pg = try await Harness(.postgresql)
        let copy = try await Executable.run("drover", ["migrate-db", "--config-dir", pg.config.path, "--from-sqlite", sqlite.sqlitePath])
        #expect(copy.status == 0, "\(copy.stderr)")
        #expect(copy.stdout == "Copied 1 cluster, 1 nodes, 5 sessions; verified 1 cluster, 1 nodes, 5 sessions in PostgreSQL.\n")
        let target = try await pg.store()
        #expect(try await target.nodes().map(\.id) == [b.id])
        #expect(try await target.registerNode(RegistryConformance.registration("c")).id > b.id)
        await target.close()

        let again = try await Executable.run("drover", ["migrate-db", "--config-dir", pg.config.path, "--from-sqlite", sqlite.sqlitePath])
        #expect(again.status == 1)
        #expect(again.stderr.contains("the target registry is not empty (1 cluster, 2 nodes, 5 sessions); pass --force"))
        let forced = try await Executable.run("drover", ["migrate-db", "--config-dir", pg.config.path, "--from-sqlite", sqlite.sqlitePath, "--force"])
        #expect(forced.status == 0, "\(forced.stderr)")

        let wrongProvider = try await Executable.run("drover", ["migrate-db", "--config-dir", sqlite.config.path, "--from-sqlite", sqlite.sqlitePath])
        #expect(wrongProvider.status == 2)
        #expect(wrongProvider.stderr.contains("migrate-db --from-sqlite copies into PostgreSQL; set provider=postgresql"))
        let missing = try await Executable.run("drover", ["migrate-db", "--config-dir", pg.config.path, "--from-sqlite", "/nonexistent.sqlite"])
        #expect(missing.status == 1)
    }
}

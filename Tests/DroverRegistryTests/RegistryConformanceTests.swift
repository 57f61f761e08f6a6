import DroverKernel
import DroverPlugins
import DroverRegistrySQL
import DroverVersion
import DroverTesting
import Foundation
import Testing

/// Every registry store, one suite: the same operations must mean the same thing in each.
@Suite struct RegistryConformanceTests {
    /// Every store of the catalog, and the in-memory double the other suites use; PostgreSQL
    /// whenever its tests should run (always under CI=true, where a missing server fails them).
    static var stores: [StoreKind] {
        ([.memory] + PluginCatalog.builtin.registryStores.compactMap { StoreKind(rawValue: $0.name) }).filter { StoreKind.enabled.contains($0) }
    }

    /// README promises that every registry store of the catalog runs through the suite in
    /// `DroverTesting`: the arguments come from the catalog, and the harness must be able to
    /// give each store fresh storage.
    @Test func everyCatalogStoreIsCovered() {
        for factory in PluginCatalog.builtin.registryStores {
            #expect(StoreKind(rawValue: factory.name) != nil, "the registry harness cannot make '\(factory.name)': add a StoreKind for it")
        }
    }

    @Test(arguments: stores, RegistryConformance.Check.allCases)
    func conforms(kind: StoreKind, check: RegistryConformance.Check) async throws {
        let harness = try await Harness(kind)
        try await RegistryConformance.run(check) { try harness.makeStore() }
    }

    /// A registry made by the first schema (before `unreachable_since`) is upgraded in place
    /// by the next node to start, its rows kept.
    @Test(arguments: StoreKind.enabled.filter { $0 != .memory })
    func aRegistryOfTheFirstSchemaIsUpgradedKeepingItsRows(kind: StoreKind) async throws {
        let harness = try await Harness(kind)
        let old = try await harness.store()
        let node = try await old.registerNode(RegistryConformance.registration("h"))
        try await old.createSession(RegistryConformance.newSession("s1", node: node.id, state: .running))
        await old.close()
        try await harness.rawSQL("ALTER TABLE node DROP COLUMN unreachable_since; DROP TABLE revocation; DROP TABLE audit; "
            + "ALTER TABLE session DROP COLUMN kind; ALTER TABLE node DROP COLUMN kinds; DROP TABLE sign_in_failure; ALTER TABLE session DROP COLUMN hold; "
            + "DROP TABLE registry_clock; DROP TABLE used_ticket; ALTER TABLE node DROP COLUMN protocol; ALTER TABLE node DROP COLUMN schema_known; "
            + "ALTER TABLE schema_version DROP COLUMN kind; ALTER TABLE schema_version DROP COLUMN applied_at; DELETE FROM schema_version WHERE version > 1;")
        let upgraded = try await harness.store()
        #expect(try await upgraded.nodes().map(\.host) == ["h"])
        #expect(try await upgraded.nodes().first?.unreachableSince == nil)
        #expect(try await upgraded.session("s1")?.ownership.node == node.id)
        try await Task.sleep(for: .milliseconds(30))
        #expect(try await upgraded.markUnreachable(node: node.id, silentFor: 0.01))
        // Schema 3: revocations.
        let revocation = CookieRevocation(cookieDigest: "d1", username: "u", issuedUpTo: 1, expiresAt: Date().timeIntervalSince1970 + 60)
        try await upgraded.revoke(revocation, now: Date())
        #expect(try await upgraded.revocations(now: Date()) == [revocation])
        // Schema 4: the audit log.
        try await upgraded.appendAudit([AuditRecord(actor: .daemon, action: "session-recover", target: "s1", username: "u", node: node.id)])
        #expect(try await upgraded.audit(matching: AuditFilter()).map(\.action) == ["session-recover"])
        // Schema 5: session kinds. What was there before is the `default` kind (session-command).
        #expect(try await upgraded.session("s1")?.kind == "default")
        #expect(try await upgraded.nodes().first?.kinds == ["default"])
        var registration = RegistryConformance.registration("h")
        registration.kinds = ["default", "jupyterlab"]
        #expect(try await upgraded.registerNode(registration).kinds == ["default", "jupyterlab"])
        var lab = RegistryConformance.newSession("s2", node: node.id, state: .running)
        lab.kind = "jupyterlab"
        try await upgraded.createSession(lab)
        #expect(try await upgraded.session("s2")?.kind == "jupyterlab")
        // Schema 6: failed sign-ins per name, counted within a window, cleared by a sign-in.
        let at = Date()
        #expect(try await upgraded.recordSignInFailure(username: "Bob", now: at.addingTimeInterval(-100), window: 60) == 1)
        #expect(try await upgraded.recordSignInFailure(username: "bob", now: at, window: 60) == 1, "the old one left the window")
        #expect(try await upgraded.recordSignInFailure(username: "BOB", now: at, window: 60) == 2, "names count in any case")
        #expect(try await upgraded.recordSignInFailure(username: "alice", now: at, window: 60) == 1)
        try await upgraded.clearSignInFailures(username: "bob")
        #expect(try await upgraded.recordSignInFailure(username: "bob", now: at, window: 60) == 1)
        // Schema 7: a session held for going over its memory limit; old rows are not held.
        #expect(try await upgraded.session("s1")?.hold == nil)
        #expect(try await upgraded.holdSession("s1", from: SessionOwnership(node: node.id, state: .running), reason: "it used more than its memory-limit"))
        #expect(try await upgraded.session("s1")?.hold == "it used more than its memory-limit")
        // Schema 8: whose clock wrote the liveness times (the PostgreSQL store moves them when
        // the server changes: RegistryFailoverTests; PostgreSQL's migrate names its server).
        try await harness.rawSQL("DELETE FROM registry_clock; INSERT INTO registry_clock (id, server, since) VALUES (1, '1000.5', CURRENT_TIMESTAMP)")
        // Schema 9: session origins' sign-in tickets, each taken once.
        #expect(try await upgraded.consumeTicket("t1", expiresAt: Date().addingTimeInterval(60), now: Date()))
        #expect(try await upgraded.consumeTicket("t1", expiresAt: Date().addingTimeInterval(60), now: Date()) == false)
        // Schema 10: each node's protocol version and newest schema; a row from before is
        // protocol 1 and knows no schema (older than any contraction).
        #expect(try await upgraded.nodes().first?.protocolVersion == 1)
        #expect(try await upgraded.nodes().first?.schemaKnown == 0)
        registration.protocolVersion = 2
        #expect(try await upgraded.registerNode(registration).protocolVersion == 2)
        #expect(try await upgraded.nodes().first?.protocolVersion == 2)
        await upgraded.close()
    }

    /// The schema the build says it speaks (`--version`, DroverVersion) is the one its
    /// migrations end at.
    @Test func theSchemaTheVersionNamesIsTheLastMigration() {
        #expect(SQLRegistry(dialect: .sqlite).currentVersion == DroverVersion.registrySchema)
        #expect(SQLRegistry(dialect: .postgresql).currentVersion == DroverVersion.registrySchema)
    }

    @Test(arguments: StoreKind.enabled.filter { $0 != .memory })
    func thirtyTwoClaimingProcessesExactlyOneWins(kind: StoreKind) async throws {
        let harness = try await Harness(kind)
        let setup = try await harness.store()
        try await setup.createSession(RegistryConformance.newSession("contested"))
        let start = Date().timeIntervalSince1970 + 3
        let claimers = try (0..<32).map { n in
            try RunningProcess("drover-probe", ["claim", "--config-dir", harness.config.path, "--session", "contested",
                                                "--node", String(n + 1), "--at", String(start)])
        }
        var outcomes: [String] = []
        for claimer in claimers {
            let status = try await claimer.wait(timeout: 60)
            #expect(status == 0, "claimer failed: \(claimer.stderr)")
            outcomes.append(claimer.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        #expect(outcomes.filter { $0 == "won" }.count == 1, "\(outcomes)")
        #expect(outcomes.filter { $0 == "lost" }.count == 31)
        let winner = outcomes.firstIndex(of: "won").map { Int64($0 + 1) }
        #expect(try await setup.session("contested")?.ownership == SessionOwnership(node: winner, state: .starting))
        await setup.close()
    }

    @Test(arguments: StoreKind.enabled.filter { $0 != .memory })
    func unreadableContentsAreAClearErrorNotACrash(kind: StoreKind) async throws {
        let harness = try await Harness(kind)
        let store = try await harness.store()
        let node = try await store.registerNode(RegistryConformance.registration("n"))
        try await harness.rawSQL("UPDATE node SET status = 'Sleeping' WHERE id = \(node.id)")
        await #expect(throws: RegistryError.corrupt("node \(node.id): column status holds 'Sleeping', which is not a known value")) {
            try await store.nodes()
        }
        try await store.createSession(RegistryConformance.newSession("bad"))
        try await harness.rawSQL("UPDATE session SET state = 'zombie' WHERE id = 'bad'")
        await #expect(throws: RegistryError.corrupt("session bad: column state holds 'zombie', which is not a known value")) {
            try await store.session("bad")
        }
        await store.close()
    }
}

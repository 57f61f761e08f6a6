import DroverKernel
import DroverPlugins
import DroverTesting
import Foundation
import Testing

/// Every registry store, one suite: the same operations must mean the same thing in each.
@Suite struct RegistryConformanceTests {
    /// README promises that every registry store of the catalog runs through this suite.
    @Test func everyCatalogStoreIsCovered() {
        let catalog = Set(PluginCatalog.builtin.registryStores.map { $0.name })
        #expect(catalog == Set(StoreKind.allCases.filter { $0 != .memory }.map(\.rawValue)), "add a StoreKind for each new store")
    }

    @Test(arguments: StoreKind.enabled)
    func migrationIsIdempotentAndSafeWhenConcurrent(kind: StoreKind) async throws {
        let harness = try await Harness(kind)
        let stores = try (0..<4).map { _ in try harness.makeStore() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for store in stores { group.addTask { try await store.migrate() } }
            try await group.waitForAll()
        }
        try await stores[0].migrate()
        #expect(try await stores[0].nodes().isEmpty)
        for store in stores { await store.close() }
    }

    @Test(arguments: StoreKind.enabled)
    func clusterIsDefinedReplacedAndReset(kind: StoreKind) async throws {
        let store = try await Harness(kind).store()
        #expect(try await store.cluster() == nil)
        let first = ClusterRecord(keyHash: "aa", protocol: .http, definedAt: Date(timeIntervalSince1970: 1_700_000_000.5), definedByNode: 1)
        try await store.defineCluster(first)
        #expect(try await store.cluster() == first)
        let second = ClusterRecord(keyHash: "bb", protocol: .httpsNoVerify, definedAt: Date(timeIntervalSince1970: 1_700_000_100), definedByNode: nil)
        try await store.defineCluster(second)
        #expect(try await store.cluster() == second)
        try await store.resetCluster()
        #expect(try await store.cluster() == nil)
        await store.close()
    }

    @Test(arguments: StoreKind.enabled)
    func nodesAreUpsertedByHostAndPortWithTheDatabaseClock(kind: StoreKind) async throws {
        let store = try await Harness(kind).store()
        let before = try await store.now()
        let a = try await store.registerNode(registration("a"))
        let b = try await store.registerNode(registration("b"))
        let after = try await store.now()
        let a2 = try await store.registerNode(registration("a", port: 9000))
        #expect(Set([a.id, b.id, a2.id]).count == 3)
        #expect(a.lastSeen >= before && a.lastSeen <= after, "last_seen comes from the database clock")
        #expect(a.status == .online && a.cpus == 2 && a.load == .zero && a.ipv4 == "127.0.0.9")

        var changed = registration("a")
        changed.status = .offline
        changed.ipv4 = nil
        changed.configHash = "new"
        changed.launcherFingerprint = "fp"
        let again = try await store.registerNode(changed)
        #expect(again.id == a.id)
        #expect(again.status == .offline && again.ipv4 == nil && again.configHash == "new" && again.launcherFingerprint == "fp")
        #expect(try await store.nodes().map(\.id) == [a.id, b.id, a2.id].sorted())
        await store.close()
    }

    @Test(arguments: StoreKind.enabled)
    func heartbeatStatusAndDelete(kind: StoreKind) async throws {
        let store = try await Harness(kind).store()
        let node = try await store.registerNode(registration("h"))
        try await Task.sleep(for: .milliseconds(20))
        #expect(try await store.heartbeat(node: node.id, load: LoadAverage(one: 0.5, five: 0.25, fifteen: 0.125)))
        let beaten = try #require(try await store.nodes().first)
        #expect(beaten.load == LoadAverage(one: 0.5, five: 0.25, fifteen: 0.125))
        #expect(beaten.lastSeen > node.lastSeen)
        #expect(try await store.setNodeStatus(.offlineMode, node: node.id))
        #expect(try await store.nodes().first?.status == .offlineMode)
        #expect(try await store.heartbeat(node: 999, load: .zero) == false)
        #expect(try await store.setNodeStatus(.online, node: 999) == false)
        #expect(try await store.deleteNode(node.id))
        #expect(try await store.deleteNode(node.id) == false)
        #expect(try await store.nodes().isEmpty)
        await store.close()
    }

    /// A registry made by the first schema (before `unreachable_since`) is upgraded in place
    /// by the next node to start, its rows kept.
    @Test(arguments: StoreKind.enabled.filter { $0 != .memory })
    func aRegistryOfTheFirstSchemaIsUpgradedKeepingItsRows(kind: StoreKind) async throws {
        let harness = try await Harness(kind)
        let old = try await harness.store()
        let node = try await old.registerNode(registration("h"))
        try await old.createSession(newSession("s1", node: node.id, state: .running))
        await old.close()
        try await harness.rawSQL("ALTER TABLE node DROP COLUMN unreachable_since; DELETE FROM schema_version WHERE version > 1;")
        let upgraded = try await harness.store()
        #expect(try await upgraded.nodes().map(\.host) == ["h"])
        #expect(try await upgraded.nodes().first?.unreachableSince == nil)
        #expect(try await upgraded.session("s1")?.ownership.node == node.id)
        try await Task.sleep(for: .milliseconds(30))
        #expect(try await upgraded.markUnreachable(node: node.id, silentFor: 0.01))
        await upgraded.close()
    }

    @Test(arguments: StoreKind.enabled)
    func aPeerMarksOnlyASilentOnlineNodeUnreachableAndItsHeartbeatClearsTheMark(kind: StoreKind) async throws {
        let store = try await Harness(kind).store()
        let node = try await store.registerNode(registration("h"))
        #expect(try await store.markUnreachable(node: node.id, silentFor: 60) == false, "heard from just now")
        try await Task.sleep(for: .milliseconds(30))
        #expect(try await store.markUnreachable(node: node.id, silentFor: 0.01))
        #expect(try await store.markUnreachable(node: node.id, silentFor: 0.01) == false, "already marked")
        let marked = try #require(try await store.nodes().first)
        #expect(marked.unreachableSince != nil)
        #expect(marked.isUnreachable(now: try await store.now(), heartbeatInterval: 60))
        #expect(try await store.heartbeat(node: node.id, load: .zero))
        let beaten = try #require(try await store.nodes().first)
        #expect(beaten.unreachableSince == nil)
        #expect(!beaten.isUnreachable(now: try await store.now(), heartbeatInterval: 60))
        // Only Online rows: a node that left or is in offline mode is never marked.
        #expect(try await store.setNodeStatus(.offline, node: node.id))
        try await Task.sleep(for: .milliseconds(30))
        #expect(try await store.markUnreachable(node: node.id, silentFor: 0.01) == false)
        // Registering again clears a mark too.
        #expect(try await store.setNodeStatus(.online, node: node.id))
        #expect(try await store.markUnreachable(node: node.id, silentFor: 0.01))
        #expect(try await store.registerNode(registration("h")).unreachableSince == nil)
        #expect(try await store.markUnreachable(node: 999, silentFor: 0) == false)
        await store.close()
    }

    @Test(arguments: StoreKind.enabled)
    func sessionsAreCreatedOnceFilteredTouchedAndDeleted(kind: StoreKind) async throws {
        let store = try await Harness(kind).store()
        let s1 = newSession("s1", user: "alice", node: 1, state: .running, created: Date(timeIntervalSince1970: 1_700_000_001))
        let s2 = newSession("s2", user: "bob", node: 2, state: .running, created: Date(timeIntervalSince1970: 1_700_000_002))
        let s3 = newSession("s3", user: "alice", created: Date(timeIntervalSince1970: 1_700_000_000))
        for s in [s1, s2, s3] { try await store.createSession(s) }
        await #expect(throws: RegistryError.duplicateSession("s1")) { try await store.createSession(s1) }
        #expect(try await store.session("s1") == s1)
        #expect(try await store.session("nope") == nil)
        #expect(try await store.sessions(matching: .all).map(\.id) == ["s3", "s1", "s2"])
        #expect(try await store.sessions(matching: SessionFilter(username: "alice")).map(\.id) == ["s3", "s1"])
        #expect(try await store.sessions(matching: SessionFilter(node: 2)).map(\.id) == ["s2"])
        #expect(try await store.sessions(matching: SessionFilter(states: [.suspended])).map(\.id) == ["s3"])
        #expect(try await store.sessions(matching: SessionFilter(username: "alice", states: [.running, .starting])).map(\.id) == ["s1"])
        #expect(try await store.sessions(matching: SessionFilter(states: [])).isEmpty)
        let later = Date(timeIntervalSince1970: 1_700_000_500.25)
        try await store.touchSession("s2", at: later)
        #expect(try await store.session("s2")?.lastActive == later)
        #expect(try await store.deleteSession("s2"))
        #expect(try await store.deleteSession("s2") == false)
        #expect(try await store.session("s2") == nil)
        await store.close()
    }

    @Test(arguments: StoreKind.enabled)
    func transitionsAreCompareAndSet(kind: StoreKind) async throws {
        let store = try await Harness(kind).store()
        try await store.createSession(newSession("s"))
        let suspended = SessionOwnership(node: nil, state: .suspended)
        let startingOn3 = SessionOwnership(node: 3, state: .starting)
        #expect(try await store.transitionSession("s", from: suspended, to: startingOn3))
        #expect(try await store.transitionSession("s", from: suspended, to: SessionOwnership(node: 4, state: .starting)) == false)
        #expect(try await store.transitionSession("s", from: SessionOwnership(node: 4, state: .starting), to: suspended) == false)
        let running = SessionOwnership(node: 3, state: .running, pid: 4242, port: 41000)
        #expect(try await store.transitionSession("s", from: startingOn3, to: running))
        #expect(try await store.session("s")?.ownership == running)
        #expect(try await store.transitionSession("s", from: SessionOwnership(node: 3, state: .running), to: suspended))
        #expect(try await store.session("s")?.ownership == suspended)
        #expect(try await store.transitionSession("missing", from: suspended, to: startingOn3) == false)
        await store.close()
    }

    @Test(arguments: StoreKind.enabled)
    func thirtyTwoConcurrentClaimersExactlyOneWins(kind: StoreKind) async throws {
        let harness = try await Harness(kind)
        let setup = try await harness.store()
        try await setup.createSession(newSession("contested"))
        // Several store instances, so claims travel over separate connections at once.
        let stores = kind == .memory ? [setup] : try (0..<4).map { _ in try harness.makeStore() }
        let wins = try await withThrowingTaskGroup(of: Bool.self) { group in
            for claimer in 0..<32 {
                let store = stores[claimer % stores.count]
                group.addTask {
                    try await store.transitionSession("contested", from: SessionOwnership(node: nil, state: .suspended),
                                                      to: SessionOwnership(node: Int64(claimer + 1), state: .starting))
                }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(wins == 1)
        let owner = try #require(try await setup.session("contested")?.ownership)
        #expect(owner.state == .starting && owner.node != nil)
        await setup.close()
        for store in stores { await store.close() }
    }

    @Test(arguments: StoreKind.enabled.filter { $0 != .memory })
    func thirtyTwoClaimingProcessesExactlyOneWins(kind: StoreKind) async throws {
        let harness = try await Harness(kind)
        let setup = try await harness.store()
        try await setup.createSession(newSession("contested"))
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

    @Test(arguments: StoreKind.enabled)
    func snapshotRestoresIntoAnEmptyStoreOnlyUnlessReplacing(kind: StoreKind) async throws {
        let source = try await Harness(.memory).store()
        let a = try await source.registerNode(registration("a"))
        _ = try await source.registerNode(registration("b"))
        _ = try await source.deleteNode(a.id)
        let c = try await source.registerNode(registration("c"))
        try await source.defineCluster(ClusterRecord(keyHash: "k", protocol: .https, definedAt: Date(timeIntervalSince1970: 1_700_000_000), definedByNode: c.id))
        try await source.createSession(newSession("x", node: c.id, state: .running))
        try await source.createSession(newSession("y"))
        let snapshot = try await source.snapshot()

        let target = try await Harness(kind).store()
        try await target.restore(snapshot, replacing: false)
        #expect(try await target.snapshot() == snapshot)
        await #expect(throws: RegistryError.notEmpty("1 cluster, 2 nodes, 2 sessions")) { try await target.restore(snapshot, replacing: false) }
        try await target.restore(snapshot, replacing: true)
        #expect(try await target.snapshot() == snapshot)
        let next = try await target.registerNode(registration("d"))
        #expect(next.id > c.id)
        await target.close()
    }

    @Test(arguments: StoreKind.enabled)
    func aClosedStoreRefusesCalls(kind: StoreKind) async throws {
        let store = try await Harness(kind).store()
        await store.close()
        await #expect(throws: RegistryError.closed) { try await store.nodes() }
    }

    @Test(arguments: StoreKind.enabled.filter { $0 != .memory })
    func unreadableContentsAreAClearErrorNotACrash(kind: StoreKind) async throws {
        let harness = try await Harness(kind)
        let store = try await harness.store()
        let node = try await store.registerNode(registration("n"))
        try await harness.rawSQL("UPDATE node SET status = 'Sleeping' WHERE id = \(node.id)")
        await #expect(throws: RegistryError.corrupt("node \(node.id): column status holds 'Sleeping', which is not a known value")) {
            try await store.nodes()
        }
        try await store.createSession(newSession("bad"))
        try await harness.rawSQL("UPDATE session SET state = 'zombie' WHERE id = 'bad'")
        await #expect(throws: RegistryError.corrupt("session bad: column state holds 'zombie', which is not a known value")) {
            try await store.session("bad")
        }
        await store.close()
    }
}

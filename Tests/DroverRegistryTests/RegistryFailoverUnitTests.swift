import DroverKernel
import DroverPlugins
import DroverTesting
import Foundation
import Logging
@testable import RegistryPostgres
import Testing

/// The PostgreSQL store's side of a failover that needs no standby: which pooled connections
/// go when a server fails, and how the liveness times move onto another server's clock.
@Suite struct RegistryFailoverUnitTests {
    @Test func aFailedServerTakesItsOlderConnectionsWithItAndNoOthers() {
        let abandoned = AbandonedServers()
        let before = abandoned.generation
        abandoned.abandon("10.0.0.1:5432")
        #expect(abandoned.isAbandoned("10.0.0.1:5432", openedAt: before), "a connection opened before the failure goes")
        #expect(!abandoned.isAbandoned("10.0.0.2:5432", openedAt: before), "one to another server stays")
        #expect(!abandoned.isAbandoned("10.0.0.1:5432", openedAt: abandoned.generation), "one opened after the failure stays")
        let reopened = abandoned.generation
        abandoned.abandon("10.0.0.2:5432")
        #expect(!abandoned.isAbandoned("10.0.0.1:5432", openedAt: reopened), "another server's failure leaves it")
        #expect(abandoned.isAbandoned("10.0.0.2:5432", openedAt: reopened))
    }

    func store(_ server: PostgresTestServer, _ name: String) throws -> any RegistryStore {
        let dir = TemporaryDirectory()
        let database = try DatabaseConfiguration(parsing: server.databaseConf(name), path: dir.url("database.conf"), baseDirectory: dir.path, defaultDirectory: dir.path)
        let context = PluginContext(configDirectory: dir.path, dataDirectory: dir.path, secureCookieKey: nil, logger: Logger(label: "t"))
        return try PluginCatalog.builtin.registryStore(for: database).make(config: database, context: context)
    }

    /// Rows written by another server's clock (here 40 s behind, the last heartbeat 12 s before
    /// the change) move, once, onto this server's: the freshest as old as nothing, a node that
    /// was already 10 s silent still 10 s silent. Whoever connects first does it, a process that
    /// never read a clock included; nobody does it twice.
    @Test(.enabled(if: PostgresTestServer.shouldRun))
    func timesWrittenByAnotherServersClockMoveOntoThisOnesOnce() async throws {
        let server = try PostgresTestServer.required()
        let name = try await server.createDatabase(prefix: "drover_clock")
        let first = try store(server, name)
        try await first.migrate()
        let live = try await first.registerNode(RegistryConformance.registration("live"))
        let dead = try await first.registerNode(RegistryConformance.registration("dead"))
        await first.close()
        let started = try await server.psql(name, "SELECT extract(epoch from pg_postmaster_start_time())::text").trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try await server.psql(name, "SELECT server FROM registry_clock").trimmingCharacters(in: .whitespacesAndNewlines) == started,
                "migrate names the server whose clock writes the times")

        // As a promoted standby finds them: written by another server, on a clock 40 s behind.
        try await server.psql(name, """
            UPDATE registry_clock SET server = '1000.5';
            UPDATE node SET last_seen = now() - interval '52 seconds' WHERE id = \(live.id);
            UPDATE node SET last_seen = now() - interval '62 seconds' WHERE id = \(dead.id);
            """)
        let after = try store(server, name)
        let read = try await after.nodesWithClock()
        func age(_ id: Int64) -> Double { read.now.timeIntervalSince(read.nodes.first { $0.id == id }!.lastSeen) }
        #expect(age(live.id) >= 0 && age(live.id) < 2, "the last heartbeat is as fresh as the change: \(age(live.id)) s")
        #expect(abs(age(dead.id) - 10) < 2, "a silent node keeps its silence: \(age(dead.id)) s")
        #expect(!read.nodes.first { $0.id == live.id }!.isUnreachable(now: read.now, heartbeatInterval: 1))
        #expect(read.nodes.first { $0.id == dead.id }!.isUnreachable(now: read.now, heartbeatInterval: 1))
        #expect(try await server.psql(name, "SELECT server FROM registry_clock").trimmingCharacters(in: .whitespacesAndNewlines) == started)

        // Moved once: another process's connections find it done.
        let again = try store(server, name)
        let reread = try await again.nodesWithClock()
        let moved = reread.now.timeIntervalSince(reread.nodes.first { $0.id == live.id }!.lastSeen)
        #expect(moved >= 0 && moved < 3, "not moved a second time: \(moved) s")
        await after.close()
        await again.close()
    }
}

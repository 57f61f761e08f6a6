import DroverKernel
@testable import DroverRegistrySQL
@testable import RegistryPostgres
@testable import RegistrySQLite
import DroverTesting
import Foundation
import Testing

/// The registry's schema steps, expand → migrate → contract, on a real SQLite file and a real
/// PostgreSQL database: an older build keeps using a registry a newer release expanded; a
/// contraction waits until no `Online` node knows an older schema, names those that do, and is
/// recorded; after it, the older build is refused; a step that fails changes nothing.
@Suite struct SchemaStepsTests {
    enum Backend: String, CaseIterable, CustomTestStringConvertible {
        case sqlite, postgresql
        var testDescription: String { rawValue }
        static var enabled: [Backend] { PostgresTestServer.shouldRun ? allCases : [.sqlite] }
    }

    /// A connection to a new, empty registry database of `backend`.
    func connection(_ backend: Backend) async throws -> (db: any SQLExecutor, dialect: SQLDialect, folder: TemporaryDirectory) {
        let folder = TemporaryDirectory(prefix: "drover-schema")
        switch backend {
        case .sqlite:
            return (try SQLiteConnection(path: folder.url("registry.sqlite"), busyTimeoutMilliseconds: 5000), .sqlite, folder)
        case .postgresql:
            let server = try PostgresTestServer.required()
            let name = try await server.createDatabase(prefix: "drover_schema")
            let parameters = [("host", server.host), ("port", String(server.port)), ("user", server.user), ("dbname", name)]
            return (try PostgresConnection(parameters: parameters, secret: nil, describe: name), .postgresql, folder)
        }
    }

    func node(_ host: String, schema: Int) -> NodeRegistration {
        NodeRegistration(host: host, ipv4: host, port: 8787, status: .online, cpus: 2, version: "t", configHash: "c", launcherFingerprint: nil,
                         protocolVersion: 1, schemaKnown: schema)
    }

    /// The next release: an expansion (a column the current build ignores), then a contraction
    /// (a column the current build reads, dropped).
    static let next = [SQLRegistry.Migration(11, .expand, ["ALTER TABLE node ADD COLUMN next_release_note TEXT"]),
                       SQLRegistry.Migration(12, .contract, ["ALTER TABLE session DROP COLUMN label"])]

    @Test(arguments: Backend.enabled)
    func anOlderBuildKeepsAnExpandedRegistryAndTheContractionWaitsForEveryOnlineNode(backend: Backend) async throws {
        let (db, dialect, folder) = try await connection(backend)
        _ = folder
        let current = SQLRegistry(dialect: dialect)
        let newer = SQLRegistry(dialect: dialect, nextRelease: Self.next)
        try current.migrate(db)
        let old = try current.registerNode(node("127.0.0.1", schema: current.currentVersion), db)
        _ = try newer.registerNode(node("127.0.0.2", schema: newer.currentVersion), db)

        // The newer node starts: it expands, and leaves its contraction for later.
        try newer.migrate(db)
        var status = try newer.schemaStatus(db)
        #expect(status.applied.map(\.version) == Array(1...11))
        #expect(status.applied.last?.kind == .expand && status.applied.last?.appliedAt != nil)
        #expect(status.pending == [.init(version: 12, kind: .contract, appliedAt: nil)])
        #expect(status.tooOld.map(\.id) == [old.id], "the node of the older build holds the contraction back")

        // The older build (a node restarting mid-upgrade) takes the expanded registry as it is.
        try current.migrate(db)
        #expect(try current.registerNode(node("127.0.0.1", schema: current.currentVersion), db).id == old.id)
        #expect(try current.schemaStatus(db).applied.last?.version == 11)

        // The contraction is refused while that node is Online, naming it, and changes nothing.
        #expect {
            try newer.contract(db)
        } throws: { error in
            "\(error)".contains("step 12 contracts the schema, and these Online nodes know an older one: 127.0.0.1:8787 (node \(old.id), schema 10)")
        }
        #expect(try db.query("SELECT label FROM session", []).isEmpty, "the column the older build reads is still there")
        #expect(try newer.schemaStatus(db).applied.last?.version == 11)

        // Upgraded, the node lets it run; it is recorded as a contraction.
        _ = try newer.registerNode(node("127.0.0.1", schema: newer.currentVersion), db)
        #expect(try newer.contract(db) == [12])
        status = try newer.schemaStatus(db)
        #expect(status.applied.last == .init(version: 12, kind: .contract, appliedAt: status.applied.last?.appliedAt))
        #expect(status.applied.last?.appliedAt != nil && status.pending.isEmpty && status.tooOld.isEmpty)
        #expect(try newer.contract(db).isEmpty, "nothing left to run")

        // From now on the older build cannot use the registry, and says why.
        #expect {
            try current.migrate(db)
        } throws: { error in
            "\(error)".contains("a newer release contracted it at step 12: this build (schema 10) can no longer use it; upgrade Drover on this node")
        }
    }

    /// A node that is not Online (stopped, or refused) does not hold a contraction back.
    @Test(arguments: Backend.enabled)
    func onlyOnlineNodesHoldTheContractionBack(backend: Backend) async throws {
        let (db, dialect, folder) = try await connection(backend)
        _ = folder
        let newer = SQLRegistry(dialect: dialect, nextRelease: Self.next)
        try newer.migrate(db)
        var stopped = node("127.0.0.3", schema: 10)
        stopped.status = .offline
        _ = try newer.registerNode(stopped, db)
        #expect(try newer.contract(db) == [12])
    }

    /// Migrations run in one transaction: a step whose second statement fails leaves the first
    /// undone and the schema where it was.
    @Test(arguments: Backend.enabled)
    func aStepThatFailsLeavesTheRegistryAsItWas(backend: Backend) async throws {
        let (db, dialect, folder) = try await connection(backend)
        _ = folder
        try SQLRegistry(dialect: dialect).migrate(db)
        let broken = SQLRegistry(dialect: dialect, nextRelease: [SQLRegistry.Migration(11, .expand, ["ALTER TABLE node ADD COLUMN half_done TEXT",
                                                                                                         "ALTER TABLE no_such_table ADD COLUMN x TEXT"])])
        #expect(throws: (any Error).self) { try broken.migrate(db) }
        #expect(try broken.schemaStatus(db).applied.last?.version == 10)
        #expect(throws: (any Error).self) { try db.query("SELECT half_done FROM node", []) }
    }
}

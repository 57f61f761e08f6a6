import DroverKernel
import DroverPlugins
import DroverTesting
import Foundation
import Logging
import Testing

/// The stores the conformance suite runs against. PostgreSQL is included whenever its tests
/// should run (always under CI=true, where a missing server then fails them).
enum StoreKind: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case memory
    case sqlite
    case postgresql

    var testDescription: String { rawValue }

    static var enabled: [StoreKind] {
        PostgresTestServer.shouldRun ? allCases : [.memory, .sqlite]
    }
}

/// A store of one kind on fresh, empty storage, with what a test needs to reach that storage
/// from outside (another process, psql, sqlite3).
struct Harness: Sendable {
    let kind: StoreKind
    let config: TemporaryDirectory
    let key: SecureCookieKey
    let databaseName: String?
    /// The in-memory store's one instance: every "new store" on its storage is this one.
    let memory = InMemoryRegistryStore()

    init(_ kind: StoreKind) async throws {
        self.kind = kind
        config = TemporaryDirectory(prefix: "drover-registry")
        key = SecureCookieKey(bytes: Array("registry-tests-key-0123456789".utf8))
        try config.write("secure-cookie-key", "registry-tests-key-0123456789\n", mode: 0o600)
        // A cluster member's configuration: without load-balancer the commands would read the
        // node's own SQLite store, not the one under test.
        try config.write("rserver.conf", "server-data-dir=data\nserver-shared-storage-path=shared\n")
        try config.write("load-balancer", "")
        switch kind {
        case .memory, .sqlite:
            databaseName = nil
            try config.write("database.conf", "provider=sqlite\nconnection-timeout-seconds=20\n")
        case .postgresql:
            let server = try PostgresTestServer.required()
            let name = try await server.createDatabase()
            databaseName = name
            try config.write("database.conf", server.databaseConf(name))
        }
    }

    var sqlitePath: String { config.url("data/drover.sqlite") }

    func makeStore() throws -> any RegistryStore {
        if kind == .memory { return memory }
        let configuration = try DroverConfiguration.load(directory: config.path)
        let context = PluginContext(configDirectory: config.path, dataDirectory: configuration.server.dataDirectory,
                                    secureCookieKey: key, logger: Logger(label: "test"))
        return try PluginCatalog.builtin.makeRegistryStore(configuration.database, context: context)
    }

    /// A migrated store.
    func store() async throws -> any RegistryStore {
        let store = try makeStore()
        try await store.migrate()
        return store
    }

    /// Runs SQL on the real database behind the store, bypassing it.
    func rawSQL(_ sql: String) async throws {
        switch kind {
        case .memory:
            Issue.record("no SQL behind the in-memory store")
        case .sqlite:
            let script = "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()"
            let result = try await Executable.run("/usr/bin/env", ["python3", "-c", script, sqlitePath, sql])
            guard result.status == 0 else { throw TestFailure(result.stderr) }
        case .postgresql:
            try await PostgresTestServer.required().psql(databaseName!, sql)
        }
    }
}

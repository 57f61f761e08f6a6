import DroverKernel
import DroverPlugins
import DroverTesting
import Foundation
import Logging
import Testing

/// Behaviour only the PostgreSQL store has. Serialized: one test restarts the shared server.
@Suite(.serialized, .enabled(if: PostgresTestServer.shouldRun))
struct PostgresStoreTests {
    func store(_ conf: String, key: SecureCookieKey? = nil) throws -> any RegistryStore {
        let dir = TemporaryDirectory()
        let database = try DatabaseConfiguration(parsing: conf, path: dir.url("database.conf"), baseDirectory: dir.path, defaultDirectory: dir.path)
        let context = PluginContext(configDirectory: dir.path, dataDirectory: dir.path, secureCookieKey: key, logger: Logger(label: "t"))
        return try PluginCatalog.builtin.registryStore(for: database).make(config: database, context: context)
    }

    @Test func aLiveStoreSurvivesAServerRestart() async throws {
        // A private server: restarting the shared one would disturb tests running alongside.
        let privateServer = try await PrivatePostgres()
        let server = privateServer.server
        let name = try await server.createDatabase()
        let live = try store(server.databaseConf(name, extra: "pool-size=2\n"))
        try await live.migrate()
        let node = try await live.registerNode(RegistryConformance.registration("restart"))
        try await server.restart()
        // Every pooled connection is now dead; the next calls reconnect rather than fail.
        #expect(try await live.heartbeat(node: node.id, load: LoadAverage(one: 1, five: 1, fifteen: 1)))
        #expect(try await live.nodes().map(\.id) == [node.id])

        // A call made while the server is down waits for it (bounded), then succeeds.
        try await server.stop()
        let restarter = Task.detached {
            try await Task.sleep(for: .milliseconds(1500))
            try await server.start()
        }
        #expect(try await live.heartbeat(node: node.id, load: .zero))
        try await restarter.value
        await live.close()
    }

    @Test func aMissingDatabaseSaysHowToCreateIt() async throws {
        let server = try PostgresTestServer.required()
        let absent = try store(server.databaseConf("drover_absent_db"))
        do {
            try await absent.migrate()
            Issue.record("migrate succeeded against a missing database")
        } catch {
            #expect("\(error)".contains("database 'drover_absent_db' does not exist; create it with: createdb drover_absent_db"))
        }
    }

    @Test func encryptedPasswordsWorkAndAnotherKeysAreRefusedClearly() async throws {
        let server = try PostgresTestServer.required()
        let name = try await server.createDatabase()
        try await server.psql(name, "CREATE ROLE drover_pw LOGIN PASSWORD 'pw-Secret-42'; ALTER DATABASE \(name) OWNER TO drover_pw")
        let key = SecureCookieKey(bytes: Array("the-cluster-key-0123456789".utf8))
        let encrypted = DatabasePassword.encrypt("pw-Secret-42", key: key)
        #expect(!encrypted.contains("pw-Secret-42"))
        let conf = "provider=postgresql\nhost=\(server.host)\nport=\(server.port)\ndatabase=\(name)\nusername=drover_pw\npassword=\(encrypted)\n"
        let good = try store(conf, key: key)
        try await good.migrate()
        #expect(try await good.nodes().isEmpty)
        await good.close()

        let otherKey = SecureCookieKey(bytes: Array("some-other-key-0123456789".utf8))
        #expect(throws: ConfigurationError.self) { try store(conf, key: otherKey) }
        do {
            _ = try store(conf, key: otherKey)
        } catch {
            #expect("\(error)".hasSuffix(":6: the password was encrypted under a different secure cookie key (or altered); encrypt it again with this node's key: drover encrypt-password"))
        }
    }

    @Test func passwordsNeverAppearInErrors() async throws {
        let server = try PostgresTestServer.required()
        let secret = "Never-Print-Me-77"
        let conf = "provider=postgresql\nhost=\(server.host)\nport=\(server.port)\ndatabase=drover_absent_db\nusername=nobody_here\npassword=\(secret)\n"
        let plain = try store(conf)
        do {
            try await plain.migrate()
            Issue.record("connected as a role that does not exist")
        } catch {
            #expect(!"\(error)".contains(secret))
            #expect(!String(reflecting: error).contains(secret))
        }
        let uri = try store("provider=postgresql\nconnection-uri=postgresql://nobody_here:\(secret)@\(server.host):\(server.port)/drover_absent_db\n")
        do {
            try await uri.migrate()
            Issue.record("connected as a role that does not exist")
        } catch {
            #expect(!"\(error)".contains(secret))
        }
    }
}

@Suite struct SQLiteStoreTests {
    @Test func createsItsFileAndDirectoryInWALMode() async throws {
        let harness = try await Harness(.sqlite)
        #expect(!harness.config.exists("data"))
        let store = try await harness.store()
        _ = try await store.registerNode(RegistryConformance.registration("w"))
        #expect(harness.config.exists("data/drover.sqlite"))
        let mode = try await Executable.run("/usr/bin/env", ["python3", "-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA journal_mode').fetchone()[0])", harness.sqlitePath])
        #expect(mode.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "wal")
        await store.close()
    }

    @Test func anUnwritableLocationIsAClearError() async throws {
        let dir = TemporaryDirectory()
        try dir.write("blocker", "a file where a directory should be")
        let store = SQLiteRegistryStoreProbe.make(path: dir.url("blocker/drover.sqlite"))
        await #expect(throws: RegistryError.self) { try await store.migrate() }
        do {
            try await store.migrate()
        } catch {
            #expect("\(error)".contains("cannot open the SQLite registry \(dir.url("blocker/drover.sqlite"))"))
        }
    }
}

/// Builds a SQLite store through the catalog for an arbitrary file.
enum SQLiteRegistryStoreProbe {
    static func make(path: String) -> any RegistryStore {
        var config = DatabaseConfiguration(defaultDirectory: (path as NSString).deletingLastPathComponent)
        config.database = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
        let context = PluginContext(configDirectory: "/", dataDirectory: "/", secureCookieKey: nil, logger: Logger(label: "t"))
        return try! PluginCatalog.builtin.registryStore(for: config).make(config: config, context: context)
    }
}

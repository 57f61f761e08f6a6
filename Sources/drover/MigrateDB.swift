import ArgumentParser
import DroverKernel
import Foundation
import RegistrySQLite

struct MigrateDB: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate-db",
        abstract: "Copy a SQLite registry into the configured PostgreSQL database.",
        discussion: "Copies the cluster, node and session rows in one transaction, keeping ids, then reads them back to verify.")

    @OptionGroup var options: ConfigOptions
    @Option(name: .customLong("from-sqlite"), help: "The SQLite registry file to copy (e.g. /var/lib/drover/drover.sqlite).")
    var sqlitePath: String
    @Flag(help: "Replace the rows of a target that is not empty.") var force = false

    func run() async throws {
        let config = try options.load()
        guard config.database.provider == "postgresql" else {
            throw CommandFailure("\(config.directory)/database.conf: migrate-db copies into PostgreSQL; set provider=postgresql there first", status: 2)
        }
        guard FileManager.default.fileExists(atPath: sqlitePath) else {
            throw CommandFailure("\(sqlitePath): no such SQLite registry file", status: 1)
        }
        let (sqlitePath, force) = (sqlitePath, force)
        try await RegistryAccess.using(options, shared: true) { access in
            let source = SQLiteRegistryStore(path: sqlitePath, busyTimeout: .seconds(config.database.connectionTimeoutSeconds))
            let snapshot: RegistrySnapshot
            do {
                try await source.migrate()
                snapshot = try await source.snapshot()
                await source.close()
            } catch {
                await source.close()
                throw error
            }
            try await access.store.restore(snapshot, replacing: force)
            let copied = try await access.store.snapshot()
            guard copied == snapshot else {
                throw CommandFailure("the rows read back from PostgreSQL differ from the source (\(copied.counts) vs \(snapshot.counts)); nothing else was changed", status: 1)
            }
            print("Copied \(snapshot.counts); verified \(copied.counts) in PostgreSQL.")
        }
    }
}

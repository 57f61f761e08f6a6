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
        let access = await RegistryAccess.open(options)
        guard access.configuration.database.provider == "postgresql" else {
            fail("\(access.configuration.directory)/database.conf: migrate-db copies into PostgreSQL; set provider=postgresql there first", status: 2)
        }
        guard FileManager.default.fileExists(atPath: sqlitePath) else {
            fail("\(sqlitePath): no such SQLite registry file", status: 1)
        }
        let source = SQLiteRegistryStore(path: sqlitePath, busyTimeout: .seconds(access.configuration.database.connectionTimeoutSeconds))
        do {
            try await source.migrate()
            let snapshot = try await source.snapshot()
            try await access.store.restore(snapshot, replacing: force)
            let copied = try await access.store.snapshot()
            guard copied == snapshot else {
                fail("the rows read back from PostgreSQL differ from the source (\(copied.counts) vs \(snapshot.counts)); nothing else was changed", status: 1)
            }
            print("Copied \(snapshot.counts); verified \(copied.counts) in PostgreSQL.")
        } catch {
            fail("\(error)", status: 1)
        }
        await source.close()
        await access.store.close()
    }
}

import ArgumentParser
import DroverKernel
import Foundation
import RegistrySQLite

struct MigrateDB: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate-db",
        abstract: "Show or finish the registry's schema steps, or copy a SQLite registry into PostgreSQL.",
        discussion: """
            --status shows the schema steps that ran, this build's pending ones, and the Online nodes that hold back a \
            contraction. Without options, runs this build's pending steps, contractions included, once no Online node \
            knows an older schema (else it changes nothing and names them). --from-sqlite copies the cluster, node and \
            session rows of a SQLite registry in one transaction, keeping ids, then reads them back to verify.
            """)

    @OptionGroup var options: ConfigOptions
    @Flag(help: "Show where the registry's schema stands, and change nothing.") var status = false
    @Option(name: .customLong("from-sqlite"), help: "The SQLite registry file to copy (e.g. /var/lib/drover/drover.sqlite).")
    var sqlitePath: String?
    @Flag(help: "Replace the rows of a target that is not empty.") var force = false

    func validate() throws {
        if status && sqlitePath != nil { throw ValidationError("--status and --from-sqlite do different things; give one") }
        if force && sqlitePath == nil { throw ValidationError("--force goes with --from-sqlite") }
    }

    func run() async throws {
        if let sqlitePath { return try await copy(from: sqlitePath) }
        let status = self.status
        try await RegistryAccess.using(options, migrating: !status) { access in
            if status {
                guard let schema = try await access.store.schemaStatus() else {
                    print("This registry (\(access.configuration.database.provider)) has no schema.")
                    return
                }
                print(Self.describe(schema), terminator: "")
                return
            }
            let applied: [Int]
            do {
                applied = try await access.store.contractSchema()
            } catch let error as RegistryError {
                throw CommandFailure("\(error)", status: 1)
            }
            print(applied.isEmpty ? "The registry's schema is this build's already; nothing to do."
                                  : "Ran schema step\(applied.count == 1 ? "" : "s") \(applied.map(String.init).joined(separator: ", ")).")
        }
    }

    /// `--status`: the steps that ran (one line each), the pending ones, and what holds back
    /// a contraction.
    static func describe(_ schema: RegistrySchemaStatus) -> String {
        let current = schema.applied.last?.version ?? 0
        var out = "Registry schema \(current); this build knows \(schema.buildVersion).\n\nStep  Kind      Applied\n"
        for step in schema.applied {
            let when = step.appliedAt.map { Date(timeIntervalSince1970: $0).formatted(.iso8601) } ?? "(not recorded: before step 10)"
            out += "\(String(step.version).padding(toLength: 6, withPad: " ", startingAt: 0))\(step.kind.rawValue.padding(toLength: 10, withPad: " ", startingAt: 0))\(when)\n"
        }
        if schema.pending.isEmpty {
            out += "\nPending: none.\n"
        } else {
            out += "\nPending: " + schema.pending.map { "\($0.version) (\($0.kind.rawValue))" }.joined(separator: ", ") + ".\n"
            if let contraction = schema.pending.first(where: { $0.kind == .contract }) {
                if schema.tooOld.isEmpty {
                    out += "Step \(contraction.version) contracts the schema; every Online node knows it: run drover migrate-db.\n"
                } else {
                    out += "Step \(contraction.version) contracts the schema and waits for these Online nodes to be upgraded: "
                        + RegistrySchemaStatus.naming(schema.tooOld) + ".\n"
                }
            }
        }
        if current > schema.buildVersion {
            out += "The registry is ahead of this build (a newer release expanded it); use that release's drover for migrate-db.\n"
        }
        return out
    }

    private func copy(from sqlitePath: String) async throws {
        let config = try options.load()
        guard config.database.provider == "postgresql" else {
            throw CommandFailure("\(config.directory)/database.conf: migrate-db --from-sqlite copies into PostgreSQL; set provider=postgresql there first", status: 2)
        }
        guard FileManager.default.fileExists(atPath: sqlitePath) else {
            throw CommandFailure("\(sqlitePath): no such SQLite registry file", status: 1)
        }
        let force = force
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

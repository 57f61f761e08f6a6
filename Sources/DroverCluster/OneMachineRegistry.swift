public import DroverKernel
import Foundation

/// A SQLite registry serves the nodes of one machine only: SQLite's locks hold between the
/// processes of a machine, not across machines sharing the file over NFS, where two nodes could
/// both win one placement or corrupt the file. The machine whose nodes use the file is recorded
/// beside it (`<database>.machine`, holding `/etc/machine-id`); a node of another machine is
/// refused while any of those nodes is `Online`, and takes the record over when none is.
public struct OneMachineRegistry: Sendable {
    /// The record's path.
    public let path: String
    /// The database file it guards.
    public let databaseFile: String

    /// The guard for `registry`, or nil when the registry is not SQLite.
    public init?(_ registry: DatabaseConfiguration) {
        guard registry.provider == "sqlite" else { return nil }
        databaseFile = registry.directory + "/" + registry.database + ".sqlite"
        path = registry.directory + "/" + registry.database + ".machine"
    }

    /// `/etc/machine-id`, or the host name where there is none.
    public static var thisMachine: String {
        if let id = try? String(contentsOfFile: "/etc/machine-id", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines), !id.isEmpty {
            return id
        }
        return ProcessInfo.processInfo.hostName
    }

    /// The machine recorded, if any.
    public var recorded: String? {
        (try? String(contentsOfFile: path, encoding: .utf8)).map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Why a node of this machine may not use the file while `online` nodes do, or nil.
    public func refusal(online: [NodeRecord]) -> String? {
        guard let recorded, recorded != Self.thisMachine, let example = online.first else { return nil }
        return "the SQLite registry \(databaseFile) is in use by the nodes of another machine (\(online.count) Online, e.g. "
            + "\(example.host):\(example.port)), and SQLite's locks do not hold across machines: use PostgreSQL for a cluster of "
            + "several machines (provider=postgresql in database.conf, then drover migrate-db --from-sqlite \(databaseFile))"
    }

    /// Records this machine as the file's (a node of it is joining).
    public func claim() {
        guard recorded != Self.thisMachine else { return }
        try? Data((Self.thisMachine + "\n").utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}

public import DroverKernel
public import Foundation

/// The column lists both SQL stores select, and the decoding of their rows (as text, NULL as
/// nil) into records. A value Drover cannot read is ``RegistryError/corrupt(_:)`` naming the
/// table, row and column, never a crash.
public enum RegistryRows {
    /// Columns of `node`, times as epoch seconds; `%EPOCH(col)%` is replaced by each store's
    /// epoch expression.
    public static let nodeColumns = ["id", "host", "ipv4", "port", "status", "%EPOCH(last_seen)%", "load1", "load5", "load15",
                                     "cpus", "%EPOCH(started_at)%", "version", "config_hash", "launcher_fingerprint",
                                     "%EPOCH(unreachable_since)%", "kinds", "protocol", "schema_known"]
    public static let sessionColumns = ["id", "username", "node_id", "pid", "port", "state", "%EPOCH(created_at)%",
                                        "%EPOCH(last_active)%", "label", "kind", "hold"]
    public static let clusterColumns = ["key_hash", "protocol", "%EPOCH(defined_at)%", "defined_by_node"]

    /// The column list for a SELECT, with `epoch` turning a time column into epoch seconds.
    public static func select(_ columns: [String], epoch: (String) -> String) -> String {
        columns.map { column in
            guard column.hasPrefix("%EPOCH(") else { return column }
            return epoch(String(column.dropFirst(7).dropLast(2)))
        }.joined(separator: ", ")
    }

    struct Reader {
        let table: String
        let row: [String?]
        let names: [String]
        var key: String { row.first.flatMap { $0 } ?? "?" }

        func corrupt(_ index: Int, _ what: String) -> RegistryError {
            let name = names[index].hasPrefix("%EPOCH(") ? String(names[index].dropFirst(7).dropLast(2)) : names[index]
            return .corrupt("\(table) \(key): column \(name) \(what)")
        }

        func text(_ index: Int) throws(RegistryError) -> String {
            guard index < row.count, let value = row[index] else { throw corrupt(index, "is NULL") }
            return value
        }

        func optionalText(_ index: Int) -> String? { index < row.count ? row[index] : nil }

        func int(_ index: Int) throws(RegistryError) -> Int64 {
            let value = try text(index)
            guard let int = Int64(value) else { throw corrupt(index, "holds '\(value)', not a whole number") }
            return int
        }

        func optionalInt(_ index: Int) throws(RegistryError) -> Int64? {
            guard let value = optionalText(index) else { return nil }
            guard let int = Int64(value) else { throw corrupt(index, "holds '\(value)', not a whole number") }
            return int
        }

        func double(_ index: Int) throws(RegistryError) -> Double {
            let value = try text(index)
            guard let double = Double(value), double.isFinite else { throw corrupt(index, "holds '\(value)', not a number") }
            return double
        }

        /// Times are kept to the microsecond: read back rounded to it, as SQLite 3.40 turns
        /// about 1 in 4,000 times bound as text into a REAL one bit off.
        func date(_ index: Int) throws(RegistryError) -> Date {
            Date(timeIntervalSince1970: (try double(index) * 1_000_000).rounded() / 1_000_000)
        }

        func optionalDate(_ index: Int) throws(RegistryError) -> Date? {
            optionalText(index) == nil ? nil : try date(index)
        }

        func enumeration<T: RawRepresentable>(_ index: Int, _: T.Type) throws(RegistryError) -> T where T.RawValue == String {
            let value = try text(index)
            guard let parsed = T(rawValue: value) else { throw corrupt(index, "holds '\(value)', which is not a known value") }
            return parsed
        }
    }

    public static func node(_ row: [String?]) throws(RegistryError) -> NodeRecord {
        let r = Reader(table: "node", row: row, names: nodeColumns)
        return NodeRecord(id: try r.int(0), host: try r.text(1), ipv4: r.optionalText(2), port: Int(try r.int(3)),
                          status: try r.enumeration(4, NodeStatus.self), lastSeen: try r.date(5),
                          load: LoadAverage(one: try r.double(6), five: try r.double(7), fifteen: try r.double(8)),
                          cpus: Int(try r.int(9)), startedAt: try r.date(10), version: try r.text(11),
                          configHash: try r.text(12), launcherFingerprint: r.optionalText(13),
                          unreachableSince: try r.optionalDate(14), kinds: SessionKindNames.split(r.optionalText(15)),
                          protocolVersion: Int(try r.optionalInt(16) ?? 1), schemaKnown: Int(try r.optionalInt(17) ?? 0))
    }

    public static func session(_ row: [String?]) throws(RegistryError) -> SessionRecord {
        let r = Reader(table: "session", row: row, names: sessionColumns)
        let pid = try r.optionalInt(3)
        let port = try r.optionalInt(4)
        return SessionRecord(id: try r.text(0), username: try r.text(1),
                             ownership: SessionOwnership(node: try r.optionalInt(2), state: try r.enumeration(5, SessionState.self),
                                                         pid: pid.map { Int32(truncatingIfNeeded: $0) }, port: port.map { Int($0) }),
                             createdAt: try r.date(6), lastActive: try r.date(7), label: r.optionalText(8), kind: try r.text(9),
                             hold: r.optionalText(10))
    }

    public static func cluster(_ row: [String?]) throws(RegistryError) -> ClusterRecord {
        let r = Reader(table: "cluster", row: row, names: clusterColumns)
        return ClusterRecord(keyHash: try r.text(0), protocol: try r.enumeration(1, ClusterProtocol.self),
                             definedAt: try r.date(2), definedByNode: try r.optionalInt(3))
    }

    /// Epoch seconds as text with microsecond precision, for binding times as parameters.
    public static func epoch(_ date: Date) -> String {
        String(format: "%.6f", date.timeIntervalSince1970)
    }
}

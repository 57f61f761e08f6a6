/// Where SQLite and PostgreSQL differ in the statements the registry uses.
public enum SQLDialect: Sendable {
    case sqlite
    case postgresql

    /// The n-th (1-based) parameter.
    public func parameter(_ n: Int) -> String {
        switch self {
        case .sqlite: "?\(n)"
        case .postgresql: "$\(n)"
        }
    }

    /// A time column read as epoch seconds.
    public func epoch(_ column: String) -> String {
        switch self {
        case .sqlite: column
        case .postgresql: "extract(epoch from \(column))"
        }
    }

    /// An epoch-seconds parameter written into a time column.
    public func time(_ n: Int) -> String {
        switch self {
        case .sqlite: parameter(n)
        case .postgresql: "to_timestamp(\(parameter(n)))"
        }
    }

    /// The database clock, as a value for a time column. Every store keeps times to the
    /// microsecond (PostgreSQL's precision), so rows copy between stores unchanged.
    public var now: String {
        switch self {
        case .sqlite: "(round((julianday('now') - 2440587.5) * 86400000000.0) / 1000000.0)"
        case .postgresql: "clock_timestamp()"
        }
    }

    /// Starts a transaction that writes (SQLite takes the database's write lock at once, so two
    /// writers never deadlock upgrading read locks).
    public var beginWrite: String {
        switch self {
        case .sqlite: "BEGIN IMMEDIATE"
        case .postgresql: "BEGIN"
        }
    }

    /// Serialises migrations across nodes starting together, inside the migration transaction.
    /// SQLite's `BEGIN IMMEDIATE` already holds the database lock.
    public var migrationLock: String? {
        switch self {
        case .sqlite: nil
        case .postgresql: "SELECT pg_advisory_xact_lock(7369)"
        }
    }

    /// Serialises placements across the cluster, inside the placement transaction. SQLite's
    /// `BEGIN IMMEDIATE` already admits one writer at a time.
    public var placementLock: String? {
        switch self {
        case .sqlite: nil
        case .postgresql: "SELECT pg_advisory_xact_lock(7370)"
        }
    }

    var timeType: String { self == .sqlite ? "REAL" : "TIMESTAMPTZ" }
    var doubleType: String { self == .sqlite ? "REAL" : "DOUBLE PRECISION" }
    var idType: String { self == .sqlite ? "INTEGER PRIMARY KEY AUTOINCREMENT" : "BIGSERIAL PRIMARY KEY" }
    var bigint: String { self == .sqlite ? "INTEGER" : "BIGINT" }
}

import CSQLite3
import DroverKernel
import DroverRegistrySQL

/// One SQLite connection. Not thread-safe: the store serialises every use behind a mutex.
final class SQLiteConnection: SQLExecutor {
    private let db: OpaquePointer
    let path: String

    /// Opens (creating) the file in WAL mode with a busy timeout, so several processes on this
    /// machine can share it.
    init(path: String, busyTimeoutMilliseconds: Int32) throws {
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let status = sqlite3_open_v2(path, &handle, flags, nil)
        guard status == SQLITE_OK, let handle else {
            let reason = handle.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(status))
            sqlite3_close_v2(handle)
            throw RegistryError.unavailable("cannot open the SQLite registry \(path) (\(reason)); check that its directory exists and is writable, or set directory= in database.conf")
        }
        db = handle
        self.path = path
        sqlite3_busy_timeout(db, busyTimeoutMilliseconds)
        do {
            _ = try query("PRAGMA journal_mode=WAL", [])
            try execute("PRAGMA synchronous=NORMAL", [])
        } catch {
            sqlite3_close_v2(db)
            throw error
        }
    }

    deinit {
        sqlite3_close_v2(db)
    }

    private func failure(_ status: Int32, _ sql: String) -> any Error {
        let message = String(cString: sqlite3_errmsg(db))
        if status == SQLITE_BUSY || status == SQLITE_LOCKED {
            return RegistryError.unavailable("the SQLite registry \(path) stayed locked by another process past the busy timeout (\(message))")
        }
        if status == SQLITE_CONSTRAINT || (status & 0xff) == SQLITE_CONSTRAINT {
            return SQLiteConstraintError(message: message)
        }
        if status == SQLITE_CORRUPT || status == SQLITE_NOTADB {
            return RegistryError.corrupt("\(path) is not a usable SQLite database (\(message))")
        }
        return RegistryError.unavailable("SQLite registry \(path): \(message)")
    }

    private func prepare(_ sql: String, _ parameters: [String?]) throws -> OpaquePointer {
        var statement: OpaquePointer?
        let status = sqlite3_prepare_v2(db, sql, -1, &statement, nil)
        guard status == SQLITE_OK, let statement else { throw failure(status, sql) }
        for (index, value) in parameters.enumerated() {
            let bound = if let value {
                sqlite3_bind_text(statement, Int32(index + 1), value, -1, drover_sqlite_transient())
            } else {
                sqlite3_bind_null(statement, Int32(index + 1))
            }
            guard bound == SQLITE_OK else {
                sqlite3_finalize(statement)
                throw failure(bound, sql)
            }
        }
        return statement
    }

    func query(_ sql: String, _ parameters: [String?]) throws -> [[String?]] {
        let statement = try prepare(sql, parameters)
        defer { sqlite3_finalize(statement) }
        var rows: [[String?]] = []
        let columns = sqlite3_column_count(statement)
        while true {
            let status = sqlite3_step(statement)
            if status == SQLITE_DONE { return rows }
            guard status == SQLITE_ROW else { throw failure(status, sql) }
            rows.append((0..<columns).map { column in
                switch sqlite3_column_type(statement, column) {
                case SQLITE_NULL: nil
                // sqlite3_column_text renders REAL with 15 digits; times need every bit.
                case SQLITE_FLOAT: String(sqlite3_column_double(statement, column))
                case SQLITE_INTEGER: String(sqlite3_column_int64(statement, column))
                default: sqlite3_column_text(statement, column).map { String(cString: $0) }
                }
            })
        }
    }

    @discardableResult
    func execute(_ sql: String, _ parameters: [String?]) throws -> Int {
        let statement = try prepare(sql, parameters)
        defer { sqlite3_finalize(statement) }
        var status = sqlite3_step(statement)
        while status == SQLITE_ROW { status = sqlite3_step(statement) }
        guard status == SQLITE_DONE else { throw failure(status, sql) }
        return Int(sqlite3_changes(db))
    }
}

/// A UNIQUE or CHECK constraint refused a write.
struct SQLiteConstraintError: Error, CustomStringConvertible {
    var message: String
    var description: String { "SQLite constraint failed: \(message)" }
}

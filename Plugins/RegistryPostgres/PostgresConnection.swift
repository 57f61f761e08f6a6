import CLibpq
import DroverKernel
import DroverRegistrySQL
import Foundation

/// One libpq connection. Blocking; used by one thread at a time (its ``PostgresSlot``'s mutex).
final class PostgresConnection: SQLExecutor {
    private let conn: OpaquePointer
    private let secret: String?
    /// The server libpq chose from the host list, `host:port`.
    let server: String
    /// ``AbandonedServers/generation`` when this connection was opened.
    let opened: UInt64

    /// Connects with `PQconnectdbParams`.
    /// - Parameters:
    ///   - parameters: libpq keywords and values; a `dbname` holding a URI is expanded.
    ///   - secret: the password, scrubbed from any error text.
    init(parameters: [(String, String)], secret: String?, describe target: String, opened: UInt64 = 0) throws {
        self.secret = secret
        self.opened = opened
        let keywords = parameters.map { strdup($0.0) } + [nil]
        let values = parameters.map { strdup($0.1) } + [nil]
        defer {
            keywords.forEach { free($0) }
            values.forEach { free($0) }
        }
        let constKeywords: [UnsafePointer<CChar>?] = keywords.map { $0.map { UnsafePointer($0) } }
        let constValues: [UnsafePointer<CChar>?] = values.map { $0.map { UnsafePointer($0) } }
        let handle = PQconnectdbParams(constKeywords, constValues, 1)
        guard let handle else { throw PostgresError.connectFailed("libpq could not allocate a connection", retryable: false) }
        guard PQstatus(handle) == CONNECTION_OK else {
            let message = Self.scrub(String(cString: PQerrorMessage(handle)), secret: secret)
            PQfinish(handle)
            throw PostgresError.classifyConnectFailure(message, target: target)
        }
        // The server's NOTICEs (say, "relation ... already exists, skipping" while migrating)
        // are routine; anything graver still reaches standard error.
        PQsetNoticeProcessor(handle, { _, message in
            guard let message, strncmp(message, "NOTICE:", 7) != 0 else { return }
            _ = write(2, message, strlen(message))
        }, nil)
        conn = handle
        let host = PQhost(handle).map { String(cString: $0) } ?? "?"
        let address = "\(host.contains(":") && !host.hasPrefix("/") ? "[\(host)]" : host):\(PQport(handle).map { String(cString: $0) } ?? "?")"
        server = address
    }

    deinit {
        PQfinish(conn)
    }

    /// True once the server has gone away under this connection.
    var isBroken: Bool { PQstatus(conn) != CONNECTION_OK }

    static func scrub(_ text: String, secret: String?) -> String {
        var clean = text.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "\n", with: "; ")
        if let secret, !secret.isEmpty { clean = clean.replacingOccurrences(of: secret, with: "***") }
        return clean
    }

    private func run(_ sql: String, _ parameters: [String?]) throws -> OpaquePointer {
        let cStrings: [UnsafeMutablePointer<CChar>?] = parameters.map { $0.flatMap { strdup($0) } }
        defer { cStrings.forEach { free($0) } }
        let values: [UnsafePointer<CChar>?] = cStrings.map { $0.map { UnsafePointer($0) } }
        let result = PQexecParams(conn, sql, Int32(parameters.count), nil, values, nil, nil, 0)
        guard let result else {
            throw isBroken ? PostgresError.connectionLost(Self.scrub(String(cString: PQerrorMessage(conn)), secret: secret))
                           : PostgresError.connectFailed("libpq returned no result", retryable: false)
        }
        let status = PQresultStatus(result)
        guard status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK else {
            let message = Self.scrub(String(cString: PQresultErrorMessage(result)), secret: secret)
            let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) } ?? ""
            PQclear(result)
            if isBroken || state.hasPrefix("08") || state == "57P01" || state == "57P02" || state == "57P03" {
                throw PostgresError.connectionLost(message)
            }
            if Self.notPrimaryStates.contains(state) {
                throw PostgresError.notPrimary(sqlState: state, message: message)
            }
            throw PostgresError.statementFailed(sqlState: state, message: message)
        }
        return result
    }

    /// SQLSTATEs that say this server no longer takes writes, so another one may: `25006`
    /// (read_only_sql_transaction), which a primary turned read-only
    /// (`default_transaction_read_only`) and a standby both answer to a write. A server in
    /// recovery or shutting down answers `57P01`–`57P03`, handled as a lost connection.
    static let notPrimaryStates: Set<String> = ["25006"]

    func query(_ sql: String, _ parameters: [String?]) throws -> [[String?]] {
        let result = try run(sql, parameters)
        defer { PQclear(result) }
        let rows = PQntuples(result)
        let columns = PQnfields(result)
        return (0..<rows).map { row in
            (0..<columns).map { column in
                PQgetisnull(result, row, column) == 1 ? nil : String(cString: PQgetvalue(result, row, column))
            }
        }
    }

    @discardableResult
    func execute(_ sql: String, _ parameters: [String?]) throws -> Int {
        let result = try run(sql, parameters)
        defer { PQclear(result) }
        return Int(String(cString: PQcmdTuples(result))) ?? 0
    }
}

/// What went wrong talking to PostgreSQL. Never carries the password.
enum PostgresError: Error, CustomStringConvertible {
    /// The connection could not be made; `retryable` when the server may come back (refused,
    /// starting up, shutting down).
    case connectFailed(String, retryable: Bool)
    /// The server went away during a call.
    case connectionLost(String)
    /// The server refused a write because it no longer takes them (``PostgresConnection/notPrimaryStates``):
    /// nothing was written, and another server of the list may be the primary now.
    case notPrimary(sqlState: String, message: String)
    /// The server refused a statement.
    case statementFailed(sqlState: String, message: String)

    var isRetryable: Bool {
        switch self {
        case .connectFailed(_, let retryable): retryable
        case .connectionLost, .notPrimary: true
        case .statementFailed: false
        }
    }

    var description: String {
        switch self {
        case .connectFailed(let message, _): message
        case .connectionLost(let message): "the PostgreSQL connection was lost (\(message))"
        case .notPrimary(let state, let message): "the PostgreSQL server no longer takes writes (\(state): \(message))"
        case .statementFailed(let state, let message): "PostgreSQL refused a statement (\(state)): \(message)"
        }
    }

    static func classifyConnectFailure(_ message: String, target: String) -> PostgresError {
        if let range = message.range(of: #"database "[^"]+" does not exist"#, options: .regularExpression) {
            let name = message[range].split(separator: "\"")[1]
            return .connectFailed("PostgreSQL at \(target): database '\(name)' does not exist; create it with: createdb \(name) (as a role that may create databases), or fix database= in database.conf", retryable: false)
        }
        if message.contains("password authentication failed") || message.contains("no password supplied") {
            return .connectFailed("PostgreSQL at \(target) refused the credentials (\(message)); check username= and password= in database.conf", retryable: false)
        }
        // "session is read-only" and "in hot standby mode": every server of the list answered,
        // none as a primary (between a primary's demotion and a standby's promotion).
        let transient = ["Connection refused", "starting up", "shutting down", "No such file or directory", "timeout expired", "could not connect",
                         "session is read-only", "hot standby mode", "in recovery mode", "not accepting connections"]
        return .connectFailed("cannot connect to PostgreSQL at \(target) (\(message))", retryable: transient.contains { message.contains($0) })
    }
}

public import DroverKernel
import DroverRegistrySQL
public import Foundation
public import Logging
import NIOPosix
import Synchronization

/// A pool slot: at most one connection, used by one caller at a time.
final class PostgresSlot: Sendable {
    let connection = Mutex<PostgresConnection?>(nil)
}

/// The registry in PostgreSQL (`provider=postgresql`), the store a cluster of several machines
/// shares.
///
/// Calls borrow one of `pool-size` connections (waiting when all are busy, the heartbeat ahead
/// of the rest: ``SlotPool``) and run on a thread pool of the same size, never the cooperative
/// pool. When the server restarts or fails over, a call retries with backoff (about 9 s in
/// all) and reconnects through the host list, instead of failing until the node restarts.
/// A connection that is lost, or whose server turned read-only, takes every other pooled
/// connection to the same server with it (``AbandonedServers``); libpq's
/// `target_session_attrs` then finds the server that takes writes. When the server that
/// answers changes, the stored liveness times move onto its clock (``SQLRegistry/rebaseClock(_:)``).
public final class PostgresRegistryStore: RegistryStore {
    private let parameters: [(String, String)]
    private let secret: String?
    /// `host:port/database`, for messages.
    public let target: String
    private let sql = SQLRegistry(dialect: .postgresql)
    private let pool: SlotPool<PostgresSlot>
    private let threads: NIOThreadPool
    private let retryDelays: [Duration]
    private let logger: Logger
    private let abandoned = AbandonedServers()
    /// The servers named (`host:port`), for ``serverReport()``.
    private let servers: [String]

    /// - Parameters:
    ///   - parameters: libpq connection keywords (a URI may stand in `dbname`).
    ///   - password: kept out of every message.
    ///   - poolSize: the most connections open at once.
    public init(parameters: [(String, String)], password: String?, target: String, servers: [String] = [], poolSize: Int, logger: Logger,
                retryDelays: [Duration] = [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800),
                                           .milliseconds(1600), .seconds(2), .seconds(2), .seconds(2)]) {
        self.logger = logger
        self.parameters = parameters
        self.secret = password
        self.target = target
        self.retryDelays = retryDelays
        self.servers = servers
        pool = SlotPool((0..<poolSize).map { _ in PostgresSlot() })
        threads = NIOThreadPool(numberOfThreads: poolSize)
        threads.start()
    }

    /// Runs `body` on a pooled connection, reconnecting and retrying while the server is away.
    /// `body` learns whether this is a retry, to tell its own earlier success from a lost race.
    /// An `urgent` call (the heartbeat) goes ahead of ordinary ones waiting for a connection.
    private func withConnection<T: Sendable>(urgent: Bool = false, _ body: @escaping @Sendable (PostgresConnection, SQLRegistry, _ isRetry: Bool) throws -> T) async throws -> T {
        let (parameters, secret, target, sql, abandoned, logger) = (self.parameters, self.secret, self.target, self.sql, self.abandoned, self.logger)
        var attempt = 0
        while true {
            let slot = try await pool.acquire(urgent: urgent)
            do {
                let isRetry = attempt > 0
                let result = try await threads.runIfActive {
                    try slot.connection.withLock { connection throws -> T in
                        if let open = connection, open.isBroken || abandoned.isAbandoned(open.server, openedAt: open.opened) {
                            connection = nil
                        }
                        if connection == nil {
                            let made = try PostgresConnection(parameters: parameters, secret: secret, describe: target, opened: abandoned.generation)
                            try Self.rebaseClock(made, sql: sql, logger: logger)
                            connection = made
                        }
                        do {
                            return try body(connection!, sql, isRetry)
                        } catch let error as PostgresError where error.isRetryable {
                            // Every connection to this server goes: it is gone, or no longer the primary.
                            abandoned.abandon(connection!.server)
                            connection = nil
                            throw error
                        }
                    }
                }
                pool.release(slot)
                return result
            } catch let error as PostgresError where error.isRetryable && attempt < retryDelays.count {
                pool.release(slot)
                logger.warning("PostgreSQL unavailable, retrying", metadata: ["in": "\(retryDelays[attempt])", "error": "\(error)"])
                try await Task.sleep(for: retryDelays[attempt])
                attempt += 1
            } catch let error as PostgresError {
                pool.release(slot)
                throw RegistryError.unavailable("\(error)")
            } catch {
                pool.release(slot)
                throw error
            }
        }
    }

    /// Before a new connection does anything: when the liveness times were written by another
    /// server's clock (a failover, a restart), moves them onto this one's
    /// (``SQLRegistry/rebaseClock(_:)``). Before the schema has `registry_clock` (a node about to
    /// migrate) there is nothing to move.
    static func rebaseClock(_ db: PostgresConnection, sql: SQLRegistry, logger: Logger) throws {
        do {
            if let moved = try sql.rebaseClock(db) {
                logger.warning("the registry's PostgreSQL server changed; liveness times moved onto its clock",
                               metadata: ["event": "registry-server-changed", "from": "started \(moved.previous)", "to": "\(db.server) started \(moved.current)",
                                          "moved": "\(String(format: "%.3f", moved.shift)) s"])
            }
        } catch let error as PostgresError where !error.isRetryable {
            if case .statementFailed("42P01", _) = error { return }  // registry_clock not there yet
            logger.warning("cannot check whose clock wrote the registry's times", metadata: ["error": "\(error)"])
        }
    }

    public func migrate() async throws {
        try await withConnection { db, sql, _ in
            try sql.migrate(db)
            // Names the server whose clock writes the times from now on, if none is named yet.
            _ = try sql.rebaseClock(db)
        }
    }
    public func now() async throws -> Date { try await withConnection { db, sql, _ in try sql.now(db) } }
    public func schemaStatus() async throws -> RegistrySchemaStatus? { try await withConnection { db, sql, _ in try sql.schemaStatus(db) } }
    public func contractSchema() async throws -> [Int] { try await withConnection { db, sql, _ in try sql.contract(db) } }

    /// Read from the server's side (`pg_stat_ssl` for this connection's backend), so it says
    /// what was negotiated whatever `sslmode` asked for.
    public func connectionSecurity() async throws -> String {
        let row = try await withConnection { db, _, _ in
            try db.query("SELECT ssl, version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()", []).first
        }
        guard let row, row.count == 3, row[0] == "t" else {
            return "not encrypted (set sslmode=verify-full and sslrootcert in database.conf to require TLS)"
        }
        return "encrypted (\(row[1] ?? "TLS"), \(row[2] ?? "unknown cipher"))"
    }
    /// The server this call's connection reached, and its replication as the server sees it
    /// (`pg_stat_replication` shows other roles' standbys only to `pg_monitor`).
    public func serverReport() async throws -> RegistryServerReport? {
        let servers = self.servers
        return try await withConnection { db, _, _ in
            let names = try db.query("SELECT current_setting('synchronous_standby_names')", []).first?.first ?? nil
            let synchronous = try db.query("SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')", [])
                .first?.first.flatMap { $0 }.flatMap(Int.init) ?? 0
            return RegistryServerReport(named: servers.isEmpty ? [db.server] : servers, answered: db.server,
                                        synchronousStandbyNames: names ?? "", synchronousStandbys: synchronous)
        }
    }

    public func cluster() async throws -> ClusterRecord? { try await withConnection { db, sql, _ in try sql.cluster(db) } }

    public func defineClusterIfAbsent(_ cluster: ClusterRecord) async throws -> ClusterRecord {
        try await withConnection { db, sql, _ in try sql.defineClusterIfAbsent(cluster, db) }
    }

    public func defineCluster(_ cluster: ClusterRecord) async throws {
        try await withConnection { db, sql, _ in try sql.defineCluster(cluster, db) }
    }

    public func resetCluster() async throws { try await withConnection { db, sql, _ in try sql.resetCluster(db) } }

    public func registerNode(_ registration: NodeRegistration) async throws -> NodeRecord {
        try await withConnection { db, sql, _ in try sql.registerNode(registration, db) }
    }

    public func heartbeat(node: Int64, load: LoadAverage) async throws -> Bool {
        try await withConnection(urgent: true) { db, sql, _ in try sql.heartbeat(node: node, load: load, db) }
    }

    public func markUnreachable(node: Int64, silentFor seconds: Double) async throws -> Bool {
        try await withConnection { db, sql, _ in try sql.markUnreachable(node: node, silentFor: seconds, db) }
    }

    public func setNodeStatus(_ status: NodeStatus, node: Int64) async throws -> Bool {
        try await withConnection { db, sql, _ in try sql.setNodeStatus(status, node: node, db) }
    }

    public func nodes() async throws -> [NodeRecord] { try await withConnection { db, sql, _ in try sql.nodes(db) } }

    public func nodesWithClock() async throws -> NodesWithClock {
        try await withConnection { db, sql, _ in NodesWithClock(nodes: try sql.nodes(db), now: try sql.now(db)) }
    }

    public func deleteNode(_ id: Int64) async throws -> Bool {
        try await withConnection { db, sql, _ in try sql.deleteNode(id, db) }
    }

    public func createSession(_ session: SessionRecord) async throws {
        try await withConnection { db, sql, isRetry in
            do {
                try sql.createSession(session, db, isUniqueViolation: Self.isUniqueViolation)
            } catch RegistryError.duplicateSession(let id) where isRetry {
                // The first attempt may have committed before the connection dropped.
                guard let stored = try sql.session(id, db), stored.username == session.username,
                      stored.createdAt.timeIntervalSince(session.createdAt).magnitude < 0.001 else {
                    throw RegistryError.duplicateSession(id)
                }
            }
        }
    }

    public func transitionSession(_ id: String, from expected: SessionOwnership, to new: SessionOwnership) async throws -> Bool {
        try await withConnection { db, sql, isRetry in
            if try sql.transitionSession(id, from: expected, to: new, db) { return true }
            // After a lost connection the first attempt may have committed: the row then holds
            // exactly what this caller wrote, which no other caller would write.
            guard isRetry, let stored = try sql.session(id, db) else { return false }
            return stored.ownership == new
        }
    }

    public func holdSession(_ id: String, from expected: SessionOwnership, reason: String) async throws -> Bool {
        try await withConnection { db, sql, isRetry in
            if try sql.holdSession(id, from: expected, reason: reason, db) { return true }
            // As for a transition: a first attempt that committed left exactly this.
            guard isRetry, let stored = try sql.session(id, db) else { return false }
            return stored.ownership == SessionOwnership(node: nil, state: .suspended) && stored.hold == reason
        }
    }

    public func activeSessionCounts() async throws -> [Int64: Int] {
        try await withConnection { db, sql, _ in try sql.activeSessionCounts(db) }
    }

    public func placeNewSession(_ session: SessionRecord, userLimit: Int,
                                choose: @escaping @Sendable ([Int64: Int]) throws -> Int64) async throws -> SessionRecord {
        try await withConnection { db, sql, isRetry in
            // The first attempt may have committed before the connection dropped: its row is
            // the answer (counting it against the user's limit would refuse the user's own start).
            if isRetry, let stored = try sql.session(session.id, db), stored.username == session.username { return stored }
            do {
                return try sql.placeNewSession(session, userLimit: userLimit, choose: choose, db, isUniqueViolation: Self.isUniqueViolation)
            } catch RegistryError.duplicateSession(let id) where isRetry {
                // The first attempt may have committed before the connection dropped.
                guard let stored = try sql.session(id, db), stored.username == session.username else { throw RegistryError.duplicateSession(id) }
                return stored
            }
        }
    }

    public func placeExistingSession(_ id: String, from expected: SessionOwnership,
                                     choose: @escaping @Sendable ([Int64: Int]) throws -> Int64) async throws -> SessionRecord? {
        try await withConnection { db, sql, _ in try sql.placeExistingSession(id, from: expected, choose: choose, db) }
    }

    static func isUniqueViolation(_ error: any Error) -> Bool {
        if case .statementFailed(let state, _) = error as? PostgresError { return state == "23505" }
        return false
    }

    public func touchSession(_ id: String, at time: Date) async throws {
        try await withConnection { db, sql, _ in try sql.touchSession(id, at: time, db) }
    }

    public func session(_ id: String) async throws -> SessionRecord? {
        try await withConnection { db, sql, _ in try sql.session(id, db) }
    }

    public func sessions(matching filter: SessionFilter) async throws -> [SessionRecord] {
        try await withConnection { db, sql, _ in try sql.sessions(matching: filter, db) }
    }

    public func revoke(_ revocation: CookieRevocation, now: Date) async throws {
        try await withConnection { db, sql, _ in try sql.revoke(revocation, now: now, db) }
    }

    public func revocations(now: Date) async throws -> [CookieRevocation] {
        try await withConnection { db, sql, _ in try sql.revocations(now: now, db) }
    }

    public func consumeTicket(_ nonce: String, expiresAt: Date, now: Date) async throws -> Bool {
        try await withConnection { db, sql, _ in try sql.consumeTicket(nonce, expiresAt: expiresAt, now: now, db) }
    }

    public func recordSignInFailure(username: String, now: Date, window: Double) async throws -> Int {
        try await withConnection { db, sql, _ in try sql.recordSignInFailure(username: username, now: now, window: window, db) }
    }

    public func clearSignInFailures(username: String) async throws {
        try await withConnection { db, sql, _ in try sql.clearSignInFailures(username: username, db) }
    }

    public func deleteSession(_ id: String) async throws -> Bool {
        try await withConnection { db, sql, _ in try sql.deleteSession(id, db) }
    }

    public func appendAudit(_ records: [AuditRecord]) async throws {
        try await withConnection { db, sql, _ in try sql.appendAudit(records, db) }
    }

    public func audit(matching filter: AuditFilter) async throws -> [AuditRecord] {
        try await withConnection { db, sql, _ in try sql.audit(matching: filter, db) }
    }

    public func pruneAudit(before time: Date) async throws -> Int {
        try await withConnection { db, sql, _ in try sql.pruneAudit(before: time, db) }
    }

    public func snapshot() async throws -> RegistrySnapshot { try await withConnection { db, sql, _ in try sql.snapshot(db) } }

    public func restore(_ snapshot: RegistrySnapshot, replacing: Bool) async throws {
        try await withConnection { db, sql, _ in
            try sql.restore(snapshot, replacing: replacing,
                            resetSequence: "SELECT setval(pg_get_serial_sequence('node', 'id'), GREATEST((SELECT MAX(id) FROM node), 1))", db)
        }
    }

    public func close() async {
        pool.close()
        try? await threads.shutdownGracefully()
    }
}

/// Selects ``PostgresRegistryStore`` with `provider=postgresql`.
public enum PostgresRegistryStoreFactory: RegistryStoreFactory {
    public static let name = "postgresql"

    /// Reads `connection-uri`, or `host` (localhost), `port` (5432), `database` (drover) and
    /// `username`; `password` (plain or encrypted under the secure cookie key);
    /// `connection-timeout-seconds` (10); `pool-size` (4); `sslmode` and `sslrootcert` (libpq's,
    /// also accepted inside `connection-uri`).
    public static func make(config: DatabaseConfiguration, context: PluginContext) throws -> any RegistryStore {
        let password = try config.password?.reveal(key: context.secureCookieKey, source: config.source)
        var parameters: [(String, String)] = []
        let target: String
        if let uri = config.connectionURI {
            parameters.append(("dbname", uri))
            target = Self.describe(uri: uri)
        } else {
            parameters += [("host", config.hosts.joined(separator: ",")), ("port", config.ports.map(String.init).joined(separator: ",")),
                           ("dbname", config.database)]
            if let user = config.username { parameters.append(("user", user)) }
            target = "\(config.servers.joined(separator: ","))/\(config.database)"
        }
        // With several servers, only the one that takes writes (libpq skips standbys and a
        // primary turned read-only, and tries the next).
        if let attributes = config.targetSessionAttributes { parameters.append(("target_session_attrs", attributes)) }
        if let password { parameters.append(("password", password)) }
        // After a URI's own parameters, so database.conf's keys win over the URI's.
        if let mode = config.sslMode { parameters.append(("sslmode", mode)) }
        if let root = config.sslRootCertificate { parameters.append(("sslrootcert", root)) }
        parameters += [("connect_timeout", String(config.connectionTimeoutSeconds)), ("application_name", "drover"),
                       // A registry cut off by the network fails the call within the timeout
                       // instead of at TCP's retransmission limit (many minutes): unanswered
                       // writes by tcp_user_timeout, a silent server by keepalives.
                       ("tcp_user_timeout", String(config.connectionTimeoutSeconds * 1000)),
                       ("keepalives", "1"), ("keepalives_idle", "5"), ("keepalives_interval", "2"), ("keepalives_count", "3")]
        return PostgresRegistryStore(parameters: parameters, password: password, target: target, servers: config.servers, poolSize: config.poolSize,
                                     logger: context.logger)
    }

    /// The URI without any credentials, for messages.
    static func describe(uri: String) -> String {
        guard let schemeEnd = uri.range(of: "://") else { return "the configured connection-uri" }
        var rest = uri[schemeEnd.upperBound...]
        if let at = rest.lastIndex(of: "@") { rest = rest[rest.index(after: at)...] }
        return String(rest.split(separator: "?").first ?? rest)
    }
}

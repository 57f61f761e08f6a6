public import DroverKernel
import DroverRegistrySQL
public import Foundation
import NIOPosix
import Synchronization

/// The registry in one SQLite file, `<directory>/<database>.sqlite` (`provider=sqlite`, the
/// default). WAL mode and a busy timeout let several processes on one machine (local nodes and
/// the CLI) share it. Each store has one thread of its own for its blocking calls (never the
/// cooperative pool), so a busy wait on one file cannot stall any other work.
public final class SQLiteRegistryStore: RegistryStore {
    /// The database file.
    public let path: String
    private let busyTimeoutMilliseconds: Int32
    private let sql = SQLRegistry(dialect: .sqlite)
    private let connection = Mutex<ConnectionState>(.notOpened)
    private let thread: NIOThreadPool
    /// One call at a time goes to the thread, the heartbeat ahead of the rest.
    private let turns = SlotPool([()])

    private enum ConnectionState {
        case notOpened
        case open(SQLiteConnection)
        case closed
    }

    /// - Parameters:
    ///   - path: the file; it and its directory are created on first use.
    ///   - busyTimeout: how long a writer waits for another process's lock.
    public init(path: String, busyTimeout: Duration) {
        self.path = path
        busyTimeoutMilliseconds = Int32(clamping: busyTimeout.components.seconds * 1000)
        thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
    }

    /// Runs `body` on the store's thread; an `urgent` call (the heartbeat) goes ahead of
    /// ordinary ones waiting their turn.
    private func withConnection<T: Sendable>(urgent: Bool = false, _ body: @escaping @Sendable (SQLiteConnection, SQLRegistry) throws -> T) async throws -> T {
        let sql = self.sql
        let isClosed = connection.withLock { state in
            if case .closed = state { true } else { false }
        }
        guard !isClosed else { throw RegistryError.closed }
        try await turns.acquire(urgent: urgent)
        defer { turns.release(()) }
        return try await thread.runIfActive { [self] in
            try connection.withLock { state throws -> T in
                switch state {
                case .closed:
                    throw RegistryError.closed
                case .open(let db):
                    return try body(db, sql)
                case .notOpened:
                    let directory = (path as NSString).deletingLastPathComponent
                    try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                             attributes: [.posixPermissions: 0o750])
                    let db = try SQLiteConnection(path: path, busyTimeoutMilliseconds: busyTimeoutMilliseconds)
                    state = .open(db)
                    return try body(db, sql)
                }
            }
        }
    }

    public func migrate() async throws { try await withConnection { try $1.migrate($0) } }
    public func schemaStatus() async throws -> RegistrySchemaStatus? { try await withConnection { try $1.schemaStatus($0) } }
    public func contractSchema() async throws -> [Int] { try await withConnection { try $1.contract($0) } }
    public func now() async throws -> Date { try await withConnection { try $1.now($0) } }
    public func cluster() async throws -> ClusterRecord? { try await withConnection { try $1.cluster($0) } }
    public func defineCluster(_ cluster: ClusterRecord) async throws { try await withConnection { try $1.defineCluster(cluster, $0) } }
    public func defineClusterIfAbsent(_ cluster: ClusterRecord) async throws -> ClusterRecord {
        try await withConnection { try $1.defineClusterIfAbsent(cluster, $0) }
    }
    public func resetCluster() async throws { try await withConnection { try $1.resetCluster($0) } }

    public func registerNode(_ registration: NodeRegistration) async throws -> NodeRecord {
        try await withConnection { try $1.registerNode(registration, $0) }
    }

    public func heartbeat(node: Int64, load: LoadAverage) async throws -> Bool {
        try await withConnection(urgent: true) { try $1.heartbeat(node: node, load: load, $0) }
    }

    public func markUnreachable(node: Int64, silentFor seconds: Double) async throws -> Bool {
        try await withConnection { try $1.markUnreachable(node: node, silentFor: seconds, $0) }
    }

    public func setNodeStatus(_ status: NodeStatus, node: Int64) async throws -> Bool {
        try await withConnection { try $1.setNodeStatus(status, node: node, $0) }
    }

    public func nodes() async throws -> [NodeRecord] { try await withConnection { try $1.nodes($0) } }

    public func nodesWithClock() async throws -> NodesWithClock {
        try await withConnection { NodesWithClock(nodes: try $1.nodes($0), now: try $1.now($0)) }
    }
    public func deleteNode(_ id: Int64) async throws -> Bool { try await withConnection { try $1.deleteNode(id, $0) } }

    public func createSession(_ session: SessionRecord) async throws {
        try await withConnection { try $1.createSession(session, $0, isUniqueViolation: { $0 is SQLiteConstraintError }) }
    }

    public func transitionSession(_ id: String, from expected: SessionOwnership, to new: SessionOwnership) async throws -> Bool {
        try await withConnection { try $1.transitionSession(id, from: expected, to: new, $0) }
    }

    public func holdSession(_ id: String, from expected: SessionOwnership, reason: String) async throws -> Bool {
        try await withConnection { try $1.holdSession(id, from: expected, reason: reason, $0) }
    }

    public func activeSessionCounts() async throws -> [Int64: Int] {
        try await withConnection { try $1.activeSessionCounts($0) }
    }

    public func placeNewSession(_ session: SessionRecord, userLimit: Int,
                                choose: @escaping @Sendable ([Int64: Int]) throws -> Int64) async throws -> SessionRecord {
        try await withConnection { try $1.placeNewSession(session, userLimit: userLimit, choose: choose, $0, isUniqueViolation: { $0 is SQLiteConstraintError }) }
    }

    public func placeExistingSession(_ id: String, from expected: SessionOwnership,
                                     choose: @escaping @Sendable ([Int64: Int]) throws -> Int64) async throws -> SessionRecord? {
        try await withConnection { try $1.placeExistingSession(id, from: expected, choose: choose, $0) }
    }

    public func touchSession(_ id: String, at time: Date) async throws {
        try await withConnection { try $1.touchSession(id, at: time, $0) }
    }

    public func session(_ id: String) async throws -> SessionRecord? { try await withConnection { try $1.session(id, $0) } }

    public func sessions(matching filter: SessionFilter) async throws -> [SessionRecord] {
        try await withConnection { try $1.sessions(matching: filter, $0) }
    }

    public func deleteSession(_ id: String) async throws -> Bool { try await withConnection { try $1.deleteSession(id, $0) } }

    public func revoke(_ revocation: CookieRevocation, now: Date) async throws {
        try await withConnection { try $1.revoke(revocation, now: now, $0) }
    }

    public func revocations(now: Date) async throws -> [CookieRevocation] {
        try await withConnection { try $1.revocations(now: now, $0) }
    }

    public func consumeTicket(_ nonce: String, expiresAt: Date, now: Date) async throws -> Bool {
        try await withConnection { try $1.consumeTicket(nonce, expiresAt: expiresAt, now: now, $0) }
    }

    public func recordSignInFailure(username: String, now: Date, window: Double) async throws -> Int {
        try await withConnection { try $1.recordSignInFailure(username: username, now: now, window: window, $0) }
    }

    public func clearSignInFailures(username: String) async throws {
        try await withConnection { try $1.clearSignInFailures(username: username, $0) }
    }
    public func appendAudit(_ records: [AuditRecord]) async throws {
        try await withConnection { try $1.appendAudit(records, $0) }
    }

    public func audit(matching filter: AuditFilter) async throws -> [AuditRecord] {
        try await withConnection { try $1.audit(matching: filter, $0) }
    }

    public func pruneAudit(before time: Date) async throws -> Int {
        try await withConnection { try $1.pruneAudit(before: time, $0) }
    }

    public func snapshot() async throws -> RegistrySnapshot { try await withConnection { try $1.snapshot($0) } }

    public func restore(_ snapshot: RegistrySnapshot, replacing: Bool) async throws {
        try await withConnection { try $1.restore(snapshot, replacing: replacing, resetSequence: nil, $0) }
    }

    public func close() async {
        connection.withLock { $0 = .closed }
        turns.close()
        try? await thread.shutdownGracefully()
    }
}

/// Selects ``SQLiteRegistryStore`` with `provider=sqlite`.
public enum SQLiteRegistryStoreFactory: RegistryStoreFactory {
    public static let name = "sqlite"

    /// Reads `directory` (default `server-data-dir`), `database` (`drover`) and
    /// `connection-timeout-seconds` (10, the busy timeout).
    public static func make(config: DatabaseConfiguration, context: PluginContext) throws -> any RegistryStore {
        SQLiteRegistryStore(path: config.directory + "/" + config.database + ".sqlite",
                            busyTimeout: .seconds(config.connectionTimeoutSeconds))
    }
}

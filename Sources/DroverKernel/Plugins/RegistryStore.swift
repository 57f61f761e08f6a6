public import Foundation

/// The database holding the cluster, node and session rows (`provider=` in `database.conf`).
///
/// Every implementation keeps the same semantics, checked by one conformance suite. Calls may
/// block on I/O inside the implementation, which must keep that off the cooperative thread pool.
/// Ownership and state changes are compare-and-set: of many callers making the same transition,
/// exactly one succeeds.
public protocol RegistryStore: Sendable {
    /// Creates or upgrades the schema. Idempotent, and safe when several nodes start at once.
    /// Runs expansions only: a contraction waits for ``contractSchema()``.
    func migrate() async throws

    /// Where the schema stands; nil for a store without one (in memory).
    func schemaStatus() async throws -> RegistrySchemaStatus?

    /// Runs every pending schema step, contractions included, once no `Online` node knows an
    /// older schema than the contraction (else throws naming them, changing nothing). Returns
    /// the versions applied.
    func contractSchema() async throws -> [Int]
    /// The database's clock, the one `last_seen` is written with.
    func now() async throws -> Date

    /// The cluster row, or nil when no cluster is defined.
    func cluster() async throws -> ClusterRecord?
    /// Defines the cluster, replacing any earlier definition.
    func defineCluster(_ cluster: ClusterRecord) async throws
    /// Defines the cluster unless one is defined, in one step (two first nodes starting at the
    /// same moment define it once); returns the definition in force afterwards.
    func defineClusterIfAbsent(_ cluster: ClusterRecord) async throws -> ClusterRecord
    /// Removes the cluster row, so the next node to start defines it.
    func resetCluster() async throws

    /// Inserts or updates the node row with this host and port, stamping `last_seen` and
    /// `started_at` with the database clock; returns the stored row.
    func registerNode(_ registration: NodeRegistration) async throws -> NodeRecord
    /// Writes `last_seen` (database clock) and load; false when the row no longer exists.
    func heartbeat(node: Int64, load: LoadAverage) async throws -> Bool
    /// Records that a peer could not reach `node`, provided its row is `Online`, not already
    /// marked, and its `last_seen` is more than `silentFor` seconds old by the database clock
    /// (so a heartbeat landing meanwhile wins). The node's next heartbeat clears the mark.
    /// - Returns: true when this call set the mark.
    func markUnreachable(node: Int64, silentFor seconds: Double) async throws -> Bool
    /// Sets a node's status; false when the row no longer exists.
    func setNodeStatus(_ status: NodeStatus, node: Int64) async throws -> Bool
    /// Every node row, by id.
    func nodes() async throws -> [NodeRecord]
    /// Every node row with the database's clock, read together (one connection, no wait in
    /// between), so a row's age is never inflated by time spent waiting for the registry: what
    /// every judgement of a node's liveness reads.
    func nodesWithClock() async throws -> NodesWithClock
    /// Removes a node row; false when there was none.
    func deleteNode(_ id: Int64) async throws -> Bool

    /// Inserts a new session row; fails if the id exists.
    func createSession(_ session: SessionRecord) async throws
    /// Moves a session from `expected` owner and state to `new` in one atomic step.
    /// - Returns: true for exactly one of many callers racing with the same `expected`.
    func transitionSession(_ id: String, from expected: SessionOwnership, to new: SessionOwnership) async throws -> Bool
    /// Frees a session's row (`suspended`, no node) from `expected` in one atomic step, as
    /// ``transitionSession(_:from:to:)`` does, and holds it with `reason`
    /// (``SessionRecord/hold``): its next request is told why instead of starting it.
    /// - Returns: true for exactly one of many callers racing with the same `expected`.
    func holdSession(_ id: String, from expected: SessionOwnership, reason: String) async throws -> Bool
    /// Starting, running and suspending sessions, per owning node.
    func activeSessionCounts() async throws -> [Int64: Int]
    /// Places a new session: while holding the registry's placement lock (one placement at a
    /// time across the cluster), counts the user's sessions (any state) and refuses with
    /// ``RegistryError/userLimitReached(user:count:limit:)`` when they are `userLimit` already (0: no
    /// limit), reads every node's active session count, asks `choose` for a node and inserts
    /// `session` there in state `starting`. The count and the insert are one step: starts at once
    /// on several nodes cannot pass the limit together.
    /// - Returns: the stored row.
    func placeNewSession(_ session: SessionRecord, userLimit: Int,
                         choose: @escaping @Sendable ([Int64: Int]) throws -> Int64) async throws -> SessionRecord
    /// Places an existing session (suspended, or owned by a dead node) the same way, by
    /// compare-and-set from `expected` to the chosen node in state `starting`.
    /// - Returns: the stored row, or nil when the session no longer had `expected` ownership.
    func placeExistingSession(_ id: String, from expected: SessionOwnership,
                              choose: @escaping @Sendable ([Int64: Int]) throws -> Int64) async throws -> SessionRecord?
    /// Records activity on a session.
    func touchSession(_ id: String, at time: Date) async throws
    /// The session with this id, if any.
    func session(_ id: String) async throws -> SessionRecord?
    /// The sessions matching `filter`, oldest first.
    func sessions(matching filter: SessionFilter) async throws -> [SessionRecord]
    /// Removes a session row; false when there was none.
    func deleteSession(_ id: String) async throws -> Bool

    /// Records a revoked sign-in cookie, or all of a user's (``CookieRevocation``), and drops
    /// the records that have expired.
    func revoke(_ revocation: CookieRevocation, now: Date) async throws
    /// The revocations that have not expired at `now`.
    func revocations(now: Date) async throws -> [CookieRevocation]
    /// Uses a single-use ticket (a session origin's sign-in hand-off) by its nonce, for the
    /// whole cluster: true the first time, false ever after (until `expiresAt`, past which the
    /// ticket is refused on its own expiry and its record may go, ten minutes later so that
    /// nodes' clocks may differ). Drops the records past that.
    func consumeTicket(_ nonce: String, expiresAt: Date, now: Date) async throws -> Bool

    /// Records a failed sign-in for the user name `username` (any case) at `now`, forgets the
    /// name's failures older than `window` seconds, and returns how many are left: the count
    /// every node of the cluster shares, so N nodes do not give an attacker N times the attempts.
    func recordSignInFailure(username: String, now: Date, window: Double) async throws -> Int
    /// Forgets the name's failures (it signed in).
    func clearSignInFailures(username: String) async throws

    /// Writes audit rows in one transaction, each stamped with the database's clock, in order.
    func appendAudit(_ records: [AuditRecord]) async throws
    /// The audit rows matching `filter`, oldest first (the newest `filter.limit`).
    func audit(matching filter: AuditFilter) async throws -> [AuditRecord]
    /// Removes the audit rows written before `time`.
    /// - Returns: how many were removed.
    func pruneAudit(before time: Date) async throws -> Int

    /// Every row, for copying a registry elsewhere (`drover migrate-db`).
    func snapshot() async throws -> RegistrySnapshot
    /// Writes every row of `snapshot` in one transaction, keeping ids, and moves id sequences
    /// past them.
    /// - Parameters:
    ///   - replacing: delete existing rows first; without it a non-empty store is refused with
    ///     ``RegistryError/notEmpty(_:)``.
    func restore(_ snapshot: RegistrySnapshot, replacing: Bool) async throws

    /// Releases connections; later calls fail.
    func close() async

    /// How this process reaches the store, for `drover verify`: whether the connection is
    /// encrypted and with what (`TLSv1.3, TLS_AES_256_GCM_SHA384`), or that there is no network
    /// in between.
    func connectionSecurity() async throws -> String

    /// Which server answered and how it replicates, for `drover verify`; nil for a store
    /// with no server (SQLite).
    func serverReport() async throws -> RegistryServerReport?
}

extension RegistryStore {
    public func schemaStatus() async throws -> RegistrySchemaStatus? { nil }
    public func contractSchema() async throws -> [Int] { [] }
    public func connectionSecurity() async throws -> String { "no network connection (a local store)" }
    public func serverReport() async throws -> RegistryServerReport? { nil }
}

/// The registry's database server as `drover verify` reports it.
public struct RegistryServerReport: Sendable, Equatable {
    /// The servers the configuration names (`host:port`), in the order they are tried.
    public var named: [String]
    /// The one that answered as primary.
    public var answered: String
    /// The server's `synchronous_standby_names`; empty when replication is asynchronous.
    public var synchronousStandbyNames: String
    /// Standbys connected as synchronous (`sync` or `quorum`) that this role can see.
    public var synchronousStandbys: Int

    public init(named: [String], answered: String, synchronousStandbyNames: String, synchronousStandbys: Int) {
        self.named = named
        self.answered = answered
        self.synchronousStandbyNames = synchronousStandbyNames
        self.synchronousStandbys = synchronousStandbys
    }
}

/// All rows of a registry.
public struct RegistrySnapshot: Sendable, Equatable {
    public var cluster: ClusterRecord?
    public var nodes: [NodeRecord]
    public var sessions: [SessionRecord]

    public init(cluster: ClusterRecord?, nodes: [NodeRecord], sessions: [SessionRecord]) {
        self.cluster = cluster
        self.nodes = nodes
        self.sessions = sessions
    }

    /// `1 cluster, 3 nodes, 12 sessions`.
    public var counts: String {
        "\(cluster == nil ? 0 : 1) cluster, \(nodes.count) nodes, \(sessions.count) sessions"
    }
}

/// A registry operation that failed for a reason the caller can act on.
public enum RegistryError: Error, Equatable, CustomStringConvertible {
    /// A session with this id exists already.
    case duplicateSession(String)
    /// `restore` was asked to write into a store that has rows.
    case notEmpty(String)
    /// The database cannot be reached or refused us; the text says why and how to fix it.
    case unavailable(String)
    /// A row holds a value Drover cannot read; the text names the table, row and column.
    case corrupt(String)
    /// The user has `limit` sessions already (`max-sessions-per-user`).
    case userLimitReached(user: String, count: Int, limit: Int)
    /// The store was closed.
    case closed

    public var description: String {
        switch self {
        case .duplicateSession(let id): "a session with id \(id) already exists"
        case .notEmpty(let counts): "the target registry is not empty (\(counts)); pass --force to replace its rows"
        case .unavailable(let reason): reason
        case .corrupt(let what): "unreadable registry contents: \(what)"
        case .userLimitReached(let user, let count, let limit):
            "\(user) has \(count) sessions, the most allowed (max-sessions-per-user=\(limit)); quit one to start another"
        case .closed: "the registry store is closed"
        }
    }
}

/// Builds a ``RegistryStore`` from `database.conf`.
public protocol RegistryStoreFactory: Sendable {
    /// The `provider=` value that selects this store.
    static var name: String { get }
    /// Builds the store; reads only `database.conf`. Connecting may be deferred to the first call.
    static func make(config: DatabaseConfiguration, context: PluginContext) throws -> any RegistryStore
}

/// Every node row and the database's clock at the time they were read.
public struct NodesWithClock: Sendable {
    public var nodes: [NodeRecord]
    public var now: Date

    public init(nodes: [NodeRecord], now: Date) {
        self.nodes = nodes
        self.now = now
    }
}

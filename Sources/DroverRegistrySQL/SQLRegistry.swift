public import DroverKernel
public import Foundation

/// The registry's schema and operations, written once for every SQL store. A store supplies a
/// connection (an ``SQLExecutor``) and runs these off the cooperative thread pool.
public struct SQLRegistry: Sendable {
    public let dialect: SQLDialect
    /// Steps after the shipped ones: a test's "next release" (never set in the programs).
    let nextRelease: [Migration]

    public init(dialect: SQLDialect) {
        self.dialect = dialect
        #if DROVER_TEST_NEXT_RELEASE
        nextRelease = Self.testNextRelease
        #else
        nextRelease = []
        #endif
    }

    /// The schema steps of the rolling-upgrade test's second build (`DROVER_TEST_NEXT_RELEASE`,
    /// ``DroverVersion``): one expansion the release before ignores, then one contraction,
    /// which only `drover migrate-db` runs once every `Online` node knows it.
    public static let testNextRelease = [
        Migration(11, .expand, ["CREATE TABLE upgrade_note (node_id BIGINT NOT NULL, note TEXT NOT NULL)"]),
        Migration(12, .contract, ["DROP INDEX session_by_username", "CREATE INDEX session_by_username_state ON session (username, state)"]),
    ]

    /// The registry of a release after this one, for tests: the shipped steps, then `next`.
    public init(dialect: SQLDialect, nextRelease next: [Migration]) {
        self.dialect = dialect
        nextRelease = next
    }

    func p(_ n: Int) -> String { dialect.parameter(n) }
    var nodeSelect: String { RegistryRows.select(RegistryRows.nodeColumns, epoch: dialect.epoch) }
    private var sessionSelect: String { RegistryRows.select(RegistryRows.sessionColumns, epoch: dialect.epoch) }
    private var clusterSelect: String { RegistryRows.select(RegistryRows.clusterColumns, epoch: dialect.epoch) }

    public func now(_ db: some SQLExecutor) throws -> Date {
        let row = try db.query("SELECT \(dialect.epoch(dialect.now))", []).first
        guard let text = row?.first ?? nil, let seconds = Double(text) else { throw RegistryError.corrupt("the database clock answered '\(String(describing: row))'") }
        return Date(timeIntervalSince1970: seconds)
    }

    /// Moves the nodes' `last_seen` times onto the clock of the database server now answering,
    /// once per change of server across the cluster (PostgreSQL; SQLite has one clock).
    ///
    /// `registry_clock` names the server whose clock wrote the times, as that server reports
    /// itself: when its postmaster started, in epoch seconds (a promoted standby, or a restart,
    /// is another server even behind the same address). When the row names another server,
    /// every `last_seen` (and `unreachable_since`) moves by this server's `now()` less the latest
    /// `last_seen`: each row is as old on the new clock as it was, relative to the last heartbeat
    /// written before the change, whatever the clocks' difference and however long no heartbeat
    /// could be written. Under the row's lock, so the first caller moves them and the others find
    /// it done; a missing row is written without moving anything. The PostgreSQL store calls this
    /// on every new connection before anything else, so no time written by the new server's
    /// clock is ever moved.
    /// - Returns: the server named before, the one named now and the seconds moved, when this
    ///   call moved the times.
    public func rebaseClock(_ db: some SQLExecutor) throws -> (previous: String, current: String, shift: Double)? {
        guard dialect == .postgresql else { return nil }
        let current = "extract(epoch from pg_postmaster_start_time())::text"
        // Without a lock first: the everyday answer is "the same server".
        let same = try db.query("SELECT server = \(current) FROM registry_clock WHERE id = 1", []).first?.first ?? nil
        if same == "t" { return nil }
        return try db.transaction(begin: dialect.beginWrite) {
            let row = try db.query("SELECT server, \(current) FROM registry_clock WHERE id = 1 FOR UPDATE", []).first
            guard let row, let previous = row[0], let server = row[1] else {
                try db.execute("INSERT INTO registry_clock (id, server, since) VALUES (1, \(current), now()) ON CONFLICT (id) DO NOTHING", [])
                return nil
            }
            guard previous != server else { return nil }
            let shift = try db.query("SELECT extract(epoch from now() - MAX(last_seen)) FROM node", []).first?.first.flatMap { $0 }.flatMap(Double.init) ?? 0
            try db.execute("""
                UPDATE node SET last_seen = last_seen + make_interval(secs => \(p(1))::double precision),
                    unreachable_since = unreachable_since + make_interval(secs => \(p(1))::double precision)
                """, [String(shift)])
            try db.execute("UPDATE registry_clock SET server = \(p(1)), since = now() WHERE id = 1", [server])
            return (previous, server, shift)
        }
    }

    // MARK: cluster

    public func cluster(_ db: some SQLExecutor) throws -> ClusterRecord? {
        try db.query("SELECT \(clusterSelect) FROM cluster WHERE id = 1", []).first.map(RegistryRows.cluster)
    }

    public func defineCluster(_ cluster: ClusterRecord, _ db: some SQLExecutor) throws {
        try db.transaction(begin: dialect.beginWrite) {
            try db.execute("DELETE FROM cluster", [])
            try insertCluster(cluster, db)
        }
    }

    public func defineClusterIfAbsent(_ cluster: ClusterRecord, _ db: some SQLExecutor) throws -> ClusterRecord {
        // ON CONFLICT: a PostgreSQL transaction that started beside another's insert waits for
        // it and then writes nothing (SQLite's BEGIN IMMEDIATE serialises them anyway).
        try db.transaction(begin: dialect.beginWrite) {
            try db.execute("INSERT INTO cluster (id, key_hash, protocol, defined_at, defined_by_node) VALUES (1, \(p(1)), \(p(2)), \(dialect.time(3)), \(p(4))) "
                           + "ON CONFLICT (id) DO NOTHING",
                           [cluster.keyHash, cluster.protocol.rawValue, RegistryRows.epoch(cluster.definedAt), cluster.definedByNode.map(String.init)])
            guard let stored = try self.cluster(db) else { throw RegistryError.corrupt("the cluster row written is not there") }
            return stored
        }
    }

    private func insertCluster(_ cluster: ClusterRecord, _ db: some SQLExecutor) throws {
        try db.execute("INSERT INTO cluster (id, key_hash, protocol, defined_at, defined_by_node) VALUES (1, \(p(1)), \(p(2)), \(dialect.time(3)), \(p(4)))",
                       [cluster.keyHash, cluster.protocol.rawValue, RegistryRows.epoch(cluster.definedAt), cluster.definedByNode.map(String.init)])
    }

    public func resetCluster(_ db: some SQLExecutor) throws {
        try db.execute("DELETE FROM cluster", [])
    }

    // MARK: nodes

    public func registerNode(_ r: NodeRegistration, _ db: some SQLExecutor) throws -> NodeRecord {
        let sql = """
            INSERT INTO node (host, ipv4, port, status, last_seen, cpus, started_at, version, config_hash, launcher_fingerprint, kinds, protocol,
                schema_known)
            VALUES (\(p(1)), \(p(2)), \(p(3)), \(p(4)), \(dialect.now), \(p(5)), \(dialect.now), \(p(6)), \(p(7)), \(p(8)), \(p(9)), \(p(10)), \(p(11)))
            ON CONFLICT (host, port) DO UPDATE SET ipv4 = excluded.ipv4, status = excluded.status, last_seen = excluded.last_seen,
                cpus = excluded.cpus, started_at = excluded.started_at, version = excluded.version,
                config_hash = excluded.config_hash, launcher_fingerprint = excluded.launcher_fingerprint,
                unreachable_since = NULL, kinds = excluded.kinds, protocol = excluded.protocol, schema_known = excluded.schema_known
            RETURNING \(nodeSelect)
            """
        let rows = try db.query(sql, [r.host, r.ipv4, String(r.port), r.status.rawValue, String(r.cpus), r.version, r.configHash, r.launcherFingerprint,
                                      SessionKindNames.joined(r.kinds), String(r.protocolVersion), String(r.schemaKnown)])
        guard let row = rows.first else { throw RegistryError.corrupt("registering node \(r.host):\(r.port) returned no row") }
        return try RegistryRows.node(row)
    }

    public func heartbeat(node: Int64, load: LoadAverage, _ db: some SQLExecutor) throws -> Bool {
        try db.execute("""
            UPDATE node SET last_seen = \(dialect.now), load1 = \(p(1)), load5 = \(p(2)), load15 = \(p(3)), unreachable_since = NULL
            WHERE id = \(p(4))
            """, [String(load.one), String(load.five), String(load.fifteen), String(node)]) > 0
    }

    public func markUnreachable(node: Int64, silentFor seconds: Double, _ db: some SQLExecutor) throws -> Bool {
        try db.execute("""
            UPDATE node SET unreachable_since = \(dialect.now)
            WHERE id = \(p(1)) AND status = \(p(2)) AND unreachable_since IS NULL
                AND \(dialect.epoch("last_seen")) < \(dialect.epoch(dialect.now)) - \(p(3))
            """, [String(node), NodeStatus.online.rawValue, String(seconds)]) > 0
    }

    public func setNodeStatus(_ status: NodeStatus, node: Int64, _ db: some SQLExecutor) throws -> Bool {
        try db.execute("UPDATE node SET status = \(p(1)) WHERE id = \(p(2))", [status.rawValue, String(node)]) > 0
    }

    public func nodes(_ db: some SQLExecutor) throws -> [NodeRecord] {
        try db.query("SELECT \(nodeSelect) FROM node ORDER BY id", []).map(RegistryRows.node)
    }

    public func deleteNode(_ id: Int64, _ db: some SQLExecutor) throws -> Bool {
        try db.execute("DELETE FROM node WHERE id = \(p(1))", [String(id)]) > 0
    }

    // MARK: sessions

    private func sessionParameters(_ s: SessionRecord) -> [String?] {
        [s.id, s.username, s.ownership.node.map(String.init), s.ownership.pid.map(String.init), s.ownership.port.map(String.init),
         s.ownership.state.rawValue, RegistryRows.epoch(s.createdAt), RegistryRows.epoch(s.lastActive), s.label, s.kind, s.hold]
    }

    private var insertSession: String {
        """
        INSERT INTO session (id, username, node_id, pid, port, state, created_at, last_active, label, kind, hold)
        VALUES (\(p(1)), \(p(2)), \(p(3)), \(p(4)), \(p(5)), \(p(6)), \(dialect.time(7)), \(dialect.time(8)), \(p(9)), \(p(10)), \(p(11)))
        """
    }

    /// Inserts a session. The caller maps its driver's unique-violation to
    /// ``RegistryError/duplicateSession(_:)`` via `isUniqueViolation`.
    public func createSession(_ session: SessionRecord, _ db: some SQLExecutor, isUniqueViolation: (any Error) -> Bool) throws {
        do {
            try db.execute(insertSession, sessionParameters(session))
        } catch where isUniqueViolation(error) {
            throw RegistryError.duplicateSession(session.id)
        }
    }

    public func transitionSession(_ id: String, from expected: SessionOwnership, to new: SessionOwnership, _ db: some SQLExecutor) throws -> Bool {
        let ownerMatch = expected.node == nil ? "node_id IS NULL" : "node_id = \(p(7))"
        let sql = """
            UPDATE session SET node_id = \(p(1)), state = \(p(2)), pid = \(p(3)), port = \(p(4)), last_active = \(dialect.now), hold = NULL
            WHERE id = \(p(5)) AND state = \(p(6)) AND \(ownerMatch)
            """
        var parameters: [String?] = [new.node.map(String.init), new.state.rawValue, new.pid.map(String.init), new.port.map(String.init),
                                     id, expected.state.rawValue]
        if let node = expected.node { parameters.append(String(node)) }
        return try db.execute(sql, parameters) == 1
    }

    public func holdSession(_ id: String, from expected: SessionOwnership, reason: String, _ db: some SQLExecutor) throws -> Bool {
        let ownerMatch = expected.node == nil ? "node_id IS NULL" : "node_id = \(p(4))"
        let sql = """
            UPDATE session SET node_id = NULL, state = 'suspended', pid = NULL, port = NULL, hold = \(p(1))
            WHERE id = \(p(2)) AND state = \(p(3)) AND \(ownerMatch)
            """
        var parameters: [String?] = [reason, id, expected.state.rawValue]
        if let node = expected.node { parameters.append(String(node)) }
        return try db.execute(sql, parameters) == 1
    }

    public func activeSessionCounts(_ db: some SQLExecutor) throws -> [Int64: Int] {
        let rows = try db.query("""
            SELECT node_id, COUNT(*) FROM session
            WHERE node_id IS NOT NULL AND state IN ('starting', 'running', 'suspending') GROUP BY node_id
            """, [])
        var counts: [Int64: Int] = [:]
        for row in rows {
            guard let node = row[0].flatMap({ Int64($0) }), let count = row[1].flatMap({ Int($0) }) else {
                throw RegistryError.corrupt("session counts: unreadable row \(row)")
            }
            counts[node] = count
        }
        return counts
    }

    private func underPlacementLock<T>(_ db: some SQLExecutor, _ body: () throws -> T) throws -> T {
        try db.transaction(begin: dialect.beginWrite) {
            if let lock = dialect.placementLock { _ = try db.query(lock, []) }
            return try body()
        }
    }

    public func placeNewSession(_ session: SessionRecord, userLimit: Int, choose: ([Int64: Int]) throws -> Int64, _ db: some SQLExecutor,
                                isUniqueViolation: (any Error) -> Bool) throws -> SessionRecord {
        try underPlacementLock(db) {
            if userLimit > 0 {
                let count = try db.query("SELECT COUNT(*) FROM session WHERE username = \(p(1))", [session.username])
                    .first?.first.flatMap { $0 }.flatMap { Int($0) } ?? 0
                if count >= userLimit { throw RegistryError.userLimitReached(user: session.username, count: count, limit: userLimit) }
            }
            var placed = session
            placed.ownership = SessionOwnership(node: try choose(try activeSessionCounts(db)), state: .starting)
            try createSession(placed, db, isUniqueViolation: isUniqueViolation)
            guard let stored = try self.session(placed.id, db) else { throw RegistryError.corrupt("session \(placed.id) vanished while placed") }
            return stored
        }
    }

    public func placeExistingSession(_ id: String, from expected: SessionOwnership, choose: ([Int64: Int]) throws -> Int64,
                                     _ db: some SQLExecutor) throws -> SessionRecord? {
        try underPlacementLock(db) {
            guard let current = try session(id, db), current.ownership.node == expected.node,
                  current.ownership.state == expected.state else { return nil }
            let node = try choose(try activeSessionCounts(db))
            guard try transitionSession(id, from: expected, to: SessionOwnership(node: node, state: .starting), db) else { return nil }
            return try session(id, db)
        }
    }

    public func touchSession(_ id: String, at time: Date, _ db: some SQLExecutor) throws {
        try db.execute("UPDATE session SET last_active = \(dialect.time(1)) WHERE id = \(p(2))", [RegistryRows.epoch(time), id])
    }

    public func session(_ id: String, _ db: some SQLExecutor) throws -> SessionRecord? {
        try db.query("SELECT \(sessionSelect) FROM session WHERE id = \(p(1))", [id]).first.map(RegistryRows.session)
    }

    public func sessions(matching filter: SessionFilter, _ db: some SQLExecutor) throws -> [SessionRecord] {
        var conditions: [String] = []
        var parameters: [String?] = []
        if let node = filter.node {
            parameters.append(String(node))
            conditions.append("node_id = \(p(parameters.count))")
        }
        if let username = filter.username {
            parameters.append(username)
            conditions.append("username = \(p(parameters.count))")
        }
        if let states = filter.states {
            guard !states.isEmpty else { return [] }
            let list = states.map(\.rawValue).sorted().map { state -> String in
                parameters.append(state)
                return p(parameters.count)
            }
            conditions.append("state IN (\(list.joined(separator: ", ")))")
        }
        let whereClause = conditions.isEmpty ? "" : " WHERE " + conditions.joined(separator: " AND ")
        return try db.query("SELECT \(sessionSelect) FROM session\(whereClause) ORDER BY created_at, id", parameters).map(RegistryRows.session)
    }

    public func deleteSession(_ id: String, _ db: some SQLExecutor) throws -> Bool {
        try db.execute("DELETE FROM session WHERE id = \(p(1))", [id]) > 0
    }

    // MARK: revoked sign-ins

    public func revoke(_ r: CookieRevocation, now: Date, _ db: some SQLExecutor) throws {
        try db.execute("DELETE FROM revocation WHERE expires_at < \(p(1))", [String(now.timeIntervalSince1970)])
        try db.execute("""
            INSERT INTO revocation (id, username, cookie_digest, issued_up_to, expires_at) VALUES (\(p(1)), \(p(2)), \(p(3)), \(p(4)), \(p(5)))
            ON CONFLICT (id) DO NOTHING
            """, [r.id, r.username, r.cookieDigest, String(r.issuedUpTo), String(r.expiresAt)])
    }

    public func revocations(now: Date, _ db: some SQLExecutor) throws -> [CookieRevocation] {
        try db.query("SELECT cookie_digest, username, issued_up_to, expires_at FROM revocation WHERE expires_at >= \(p(1)) ORDER BY id",
                     [String(now.timeIntervalSince1970)]).map { row in
            guard row.count == 4, let username = row[1], let upTo = row[2].flatMap(Double.init), let expires = row[3].flatMap(Double.init) else {
                throw RegistryError.corrupt("a revocation row that cannot be read: \(row)")
            }
            return CookieRevocation(cookieDigest: row[0], username: username, issuedUpTo: upTo, expiresAt: expires)
        }
    }

    // MARK: single-use tickets

    public func consumeTicket(_ nonce: String, expiresAt: Date, now: Date, _ db: some SQLExecutor) throws -> Bool {
        // Kept ten minutes past the ticket's expiry: a node whose clock runs ahead must not drop
        // a record that one behind would still take the ticket for.
        try db.execute("DELETE FROM used_ticket WHERE expires_at < \(p(1))", [String(now.timeIntervalSince1970 - 600)])
        return try db.execute("INSERT INTO used_ticket (nonce, expires_at) VALUES (\(p(1)), \(p(2))) ON CONFLICT (nonce) DO NOTHING",
                              [nonce, String(expiresAt.timeIntervalSince1970)]) > 0
    }

    // MARK: failed sign-ins

    public func recordSignInFailure(username: String, now: Date, window: Double, _ db: some SQLExecutor) throws -> Int {
        let name = username.lowercased()
        return try db.transaction(begin: dialect.beginWrite) {
            try db.execute("DELETE FROM sign_in_failure WHERE username = \(p(1)) AND at < \(p(2))",
                           [name, String(now.timeIntervalSince1970 - window)])
            try db.execute("INSERT INTO sign_in_failure (username, at) VALUES (\(p(1)), \(p(2)))", [name, String(now.timeIntervalSince1970)])
            return try db.query("SELECT COUNT(*) FROM sign_in_failure WHERE username = \(p(1))", [name])
                .first?.first.flatMap { $0 }.flatMap { Int($0) } ?? 0
        }
    }

    public func clearSignInFailures(username: String, _ db: some SQLExecutor) throws {
        try db.execute("DELETE FROM sign_in_failure WHERE username = \(p(1))", [username.lowercased()])
    }

    // MARK: the audit log

    public func appendAudit(_ records: [AuditRecord], _ db: some SQLExecutor) throws {
        guard !records.isEmpty else { return }
        try db.transaction(begin: dialect.beginWrite) {
            for r in records {
                try db.execute("""
                    INSERT INTO audit (at, actor, action, target, username, node_id, result, reason)
                    VALUES (\(dialect.now), \(p(1)), \(p(2)), \(p(3)), \(p(4)), \(p(5)), \(p(6)), \(p(7)))
                    """, [r.actor, r.action, r.target, r.username, r.node.map(String.init), r.result, r.reason])
            }
        }
    }

    public func audit(matching filter: AuditFilter, _ db: some SQLExecutor) throws -> [AuditRecord] {
        var conditions: [String] = []
        var parameters: [String?] = []
        if let since = filter.since {
            parameters.append(RegistryRows.epoch(since))
            conditions.append("at >= \(dialect.time(parameters.count))")
        }
        if let username = filter.username {
            parameters.append(username)
            conditions.append("username = \(p(parameters.count))")
        }
        let whereClause = conditions.isEmpty ? "" : " WHERE " + conditions.joined(separator: " AND ")
        let rows = try db.query("""
            SELECT id, \(dialect.epoch("at")), actor, action, target, username, node_id, result, reason FROM audit\(whereClause)
            ORDER BY id DESC LIMIT \(max(0, filter.limit))
            """, parameters)
        return try rows.reversed().map { row in
            guard row.count == 9, let id = row[0].flatMap({ Int64($0) }), let at = row[1].flatMap(Double.init), let actor = row[2],
                  let action = row[3], let target = row[4], let result = row[7], let reason = row[8] else {
                throw RegistryError.corrupt("an audit row that cannot be read: \(row)")
            }
            return AuditRecord(id: id, time: Date(timeIntervalSince1970: at), actor: actor, action: action, target: target,
                               username: row[5], node: row[6].flatMap { Int64($0) }, result: result, reason: reason)
        }
    }

    public func pruneAudit(before time: Date, _ db: some SQLExecutor) throws -> Int {
        try db.execute("DELETE FROM audit WHERE at < \(dialect.time(1))", [RegistryRows.epoch(time)])
    }

    // MARK: copying

    public func snapshot(_ db: some SQLExecutor) throws -> RegistrySnapshot {
        try db.transaction(begin: "BEGIN") { try allRows(db) }
    }

    private func allRows(_ db: some SQLExecutor) throws -> RegistrySnapshot {
        RegistrySnapshot(cluster: try cluster(db), nodes: try nodes(db), sessions: try sessions(matching: .all, db))
    }

    /// Writes a snapshot in one transaction; `resetSequence` moves the node id sequence past
    /// the copied ids (SQLite's AUTOINCREMENT does this by itself).
    public func restore(_ snapshot: RegistrySnapshot, replacing: Bool, resetSequence: String?, _ db: some SQLExecutor) throws {
        try db.transaction(begin: dialect.beginWrite) {
            if !replacing {
                let existing = try allRows(db)
                if existing.cluster != nil || !existing.nodes.isEmpty || !existing.sessions.isEmpty {
                    throw RegistryError.notEmpty(existing.counts)
                }
            }
            try db.execute("DELETE FROM session", [])
            try db.execute("DELETE FROM node", [])
            try db.execute("DELETE FROM cluster", [])
            if let cluster = snapshot.cluster { try insertCluster(cluster, db) }
            for n in snapshot.nodes {
                try db.execute("""
                    INSERT INTO node (id, host, ipv4, port, status, last_seen, load1, load5, load15, cpus, started_at, version, config_hash, launcher_fingerprint,
                        unreachable_since, kinds, protocol, schema_known)
                    VALUES (\(p(1)), \(p(2)), \(p(3)), \(p(4)), \(p(5)), \(dialect.time(6)), \(p(7)), \(p(8)), \(p(9)), \(p(10)), \(dialect.time(11)), \(p(12)), \(p(13)), \(p(14)),
                        \(dialect.time(15)), \(p(16)), \(p(17)), \(p(18)))
                    """, [String(n.id), n.host, n.ipv4, String(n.port), n.status.rawValue, RegistryRows.epoch(n.lastSeen), String(n.load.one),
                          String(n.load.five), String(n.load.fifteen), String(n.cpus), RegistryRows.epoch(n.startedAt), n.version, n.configHash,
                          n.launcherFingerprint, n.unreachableSince.map(RegistryRows.epoch), SessionKindNames.joined(n.kinds),
                          String(n.protocolVersion), String(n.schemaKnown)])
            }
            for s in snapshot.sessions { try db.execute(insertSession, sessionParameters(s)) }
            if let resetSequence { _ = try db.query(resetSequence, []) }
        }
    }
}

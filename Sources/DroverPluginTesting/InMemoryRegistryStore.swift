public import DroverKernel
public import Foundation
import Synchronization

/// A registry store in memory with the same semantics as the real ones (checked by the same
/// conformance suite), for tests that need a registry but not a database.
public final class InMemoryRegistryStore: RegistryStore {
    struct State {
        var cluster: ClusterRecord?
        var nodes: [Int64: NodeRecord] = [:]
        var sessions: [String: SessionRecord] = [:]
        var revocations: [String: CookieRevocation] = [:]
        var signInFailures: [String: [Double]] = [:]
        var usedTickets: [String: Double] = [:]
        var audit: [AuditRecord] = []
        var nextNodeID: Int64 = 1
        var closed = false
        var calls = 0
    }

    private let state = Mutex(State())
    private let clock: @Sendable () -> Date

    /// - Parameters:
    ///   - clock: the "database clock"; the wall clock by default.
    public init(clock: @escaping @Sendable () -> Date = { Date() }) {
        self.clock = { Self.microseconds(clock()) }
    }

    /// Times are kept to the microsecond, as PostgreSQL and the SQLite store keep them.
    static func microseconds(_ date: Date) -> Date {
        Date(timeIntervalSince1970: (date.timeIntervalSince1970 * 1_000_000).rounded() / 1_000_000)
    }

    /// Every call made of the store so far, for tests that check a path reads nothing.
    public var calls: Int { state.withLock { $0.calls } }

    private func locked<T>(_ body: (inout State) throws -> T) throws -> T {
        try state.withLock { state in
            state.calls += 1
            guard !state.closed else { throw RegistryError.closed }
            return try body(&state)
        }
    }

    public func migrate() async throws { try locked { _ in } }
    public func now() async throws -> Date { try locked { _ in clock() } }

    public func cluster() async throws -> ClusterRecord? { try locked { $0.cluster } }
    public func defineCluster(_ cluster: ClusterRecord) async throws {
        var stored = cluster
        stored.definedAt = Self.microseconds(cluster.definedAt)
        try locked { $0.cluster = stored }
    }
    public func defineClusterIfAbsent(_ cluster: ClusterRecord) async throws -> ClusterRecord {
        var stored = cluster
        stored.definedAt = Self.microseconds(cluster.definedAt)
        return try locked { state in
            if let existing = state.cluster { return existing }
            state.cluster = stored
            return stored
        }
    }
    public func resetCluster() async throws { try locked { $0.cluster = nil } }

    public func registerNode(_ registration: NodeRegistration) async throws -> NodeRecord {
        let now = clock()
        return try locked { state in
            let existing = state.nodes.values.first { $0.host == registration.host && $0.port == registration.port }
            let id = existing?.id ?? state.nextNodeID
            if existing == nil { state.nextNodeID += 1 }
            let node = NodeRecord(id: id, host: registration.host, ipv4: registration.ipv4, port: registration.port,
                                  status: registration.status, lastSeen: now, load: existing?.load ?? .zero,
                                  cpus: registration.cpus, startedAt: now, version: registration.version,
                                  configHash: registration.configHash, launcherFingerprint: registration.launcherFingerprint,
                                  kinds: registration.kinds, protocolVersion: registration.protocolVersion, schemaKnown: registration.schemaKnown)
            state.nodes[id] = node
            return node
        }
    }

    public func heartbeat(node: Int64, load: LoadAverage) async throws -> Bool {
        let now = clock()
        return try locked { state in
            guard state.nodes[node] != nil else { return false }
            state.nodes[node]?.lastSeen = now
            state.nodes[node]?.load = load
            state.nodes[node]?.unreachableSince = nil
            return true
        }
    }

    public func markUnreachable(node: Int64, silentFor seconds: Double) async throws -> Bool {
        let now = clock()
        return try locked { state in
            guard let row = state.nodes[node], row.status == .online, row.unreachableSince == nil,
                  now.timeIntervalSince(row.lastSeen) > seconds else { return false }
            state.nodes[node]?.unreachableSince = now
            return true
        }
    }

    public func setNodeStatus(_ status: NodeStatus, node: Int64) async throws -> Bool {
        try locked { state in
            guard state.nodes[node] != nil else { return false }
            state.nodes[node]?.status = status
            return true
        }
    }

    public func nodes() async throws -> [NodeRecord] {
        try locked { $0.nodes.values.sorted { $0.id < $1.id } }
    }

    public func nodesWithClock() async throws -> NodesWithClock {
        try locked { NodesWithClock(nodes: $0.nodes.values.sorted { $0.id < $1.id }, now: clock()) }
    }

    public func deleteNode(_ id: Int64) async throws -> Bool {
        try locked { $0.nodes.removeValue(forKey: id) != nil }
    }

    public func createSession(_ session: SessionRecord) async throws {
        try locked { state in
            guard state.sessions[session.id] == nil else { throw RegistryError.duplicateSession(session.id) }
            var stored = session
            stored.createdAt = Self.microseconds(session.createdAt)
            stored.lastActive = Self.microseconds(session.lastActive)
            state.sessions[session.id] = stored
        }
    }

    public func transitionSession(_ id: String, from expected: SessionOwnership, to new: SessionOwnership) async throws -> Bool {
        let now = clock()
        return try locked { state in
            guard let current = state.sessions[id], current.ownership.node == expected.node,
                  current.ownership.state == expected.state else { return false }
            state.sessions[id]?.ownership = new
            state.sessions[id]?.lastActive = now
            state.sessions[id]?.hold = nil
            return true
        }
    }

    public func holdSession(_ id: String, from expected: SessionOwnership, reason: String) async throws -> Bool {
        try locked { state in
            guard let current = state.sessions[id], current.ownership.node == expected.node,
                  current.ownership.state == expected.state else { return false }
            state.sessions[id]?.ownership = SessionOwnership(node: nil, state: .suspended)
            state.sessions[id]?.hold = reason
            return true
        }
    }

    static func activeCounts(_ state: State) -> [Int64: Int] {
        var counts: [Int64: Int] = [:]
        for session in state.sessions.values {
            if let node = session.ownership.node, [.starting, .running, .suspending].contains(session.ownership.state) {
                counts[node, default: 0] += 1
            }
        }
        return counts
    }

    public func activeSessionCounts() async throws -> [Int64: Int] { try locked { Self.activeCounts($0) } }

    public func placeNewSession(_ session: SessionRecord, userLimit: Int,
                                choose: @escaping @Sendable ([Int64: Int]) throws -> Int64) async throws -> SessionRecord {
        try locked { state in
            guard state.sessions[session.id] == nil else { throw RegistryError.duplicateSession(session.id) }
            let count = state.sessions.values.filter { $0.username == session.username }.count
            if userLimit > 0, count >= userLimit { throw RegistryError.userLimitReached(user: session.username, count: count, limit: userLimit) }
            var placed = session
            placed.ownership = SessionOwnership(node: try choose(Self.activeCounts(state)), state: .starting)
            placed.createdAt = Self.microseconds(session.createdAt)
            placed.lastActive = Self.microseconds(session.lastActive)
            state.sessions[session.id] = placed
            return placed
        }
    }

    public func placeExistingSession(_ id: String, from expected: SessionOwnership,
                                     choose: @escaping @Sendable ([Int64: Int]) throws -> Int64) async throws -> SessionRecord? {
        let now = clock()
        return try locked { state in
            guard let current = state.sessions[id], current.ownership.node == expected.node,
                  current.ownership.state == expected.state else { return nil }
            let node = try choose(Self.activeCounts(state))
            state.sessions[id]?.ownership = SessionOwnership(node: node, state: .starting)
            state.sessions[id]?.lastActive = now
            state.sessions[id]?.hold = nil
            return state.sessions[id]
        }
    }

    public func touchSession(_ id: String, at time: Date) async throws {
        try locked { $0.sessions[id]?.lastActive = Self.microseconds(time) }
    }

    public func session(_ id: String) async throws -> SessionRecord? { try locked { $0.sessions[id] } }

    public func sessions(matching filter: SessionFilter) async throws -> [SessionRecord] {
        try locked { state in
            state.sessions.values.filter(filter.matches).sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }
        }
    }

    public func revoke(_ revocation: CookieRevocation, now: Date) async throws {
        try locked { state in
            state.revocations = state.revocations.filter { $0.value.expiresAt >= now.timeIntervalSince1970 }
            if state.revocations[revocation.id] == nil { state.revocations[revocation.id] = revocation }
        }
    }

    public func consumeTicket(_ nonce: String, expiresAt: Date, now: Date) async throws -> Bool {
        try locked { state in
            state.usedTickets = state.usedTickets.filter { $0.value >= now.timeIntervalSince1970 - 600 }
            guard state.usedTickets[nonce] == nil else { return false }
            state.usedTickets[nonce] = expiresAt.timeIntervalSince1970
            return true
        }
    }

    public func recordSignInFailure(username: String, now: Date, window: Double) async throws -> Int {
        try locked { state in
            let name = username.lowercased()
            var times = (state.signInFailures[name] ?? []).filter { $0 >= now.timeIntervalSince1970 - window }
            times.append(now.timeIntervalSince1970)
            state.signInFailures[name] = times
            return times.count
        }
    }

    public func clearSignInFailures(username: String) async throws {
        try locked { state in _ = state.signInFailures.removeValue(forKey: username.lowercased()) }
    }

    public func revocations(now: Date) async throws -> [CookieRevocation] {
        try locked { $0.revocations.values.filter { $0.expiresAt >= now.timeIntervalSince1970 }.sorted { $0.id < $1.id } }
    }

    public func deleteSession(_ id: String) async throws -> Bool {
        try locked { $0.sessions.removeValue(forKey: id) != nil }
    }

    public func appendAudit(_ records: [AuditRecord]) async throws {
        let now = clock()
        try locked { state in
            for var record in records {
                record.id = (state.audit.last?.id ?? 0) + 1
                record.time = now
                state.audit.append(record)
            }
        }
    }

    public func audit(matching filter: AuditFilter) async throws -> [AuditRecord] {
        try locked { state in
            Array(state.audit.filter { record in
                (filter.since.map { record.time! >= Self.microseconds($0) } ?? true) && (filter.username.map { record.username == $0 } ?? true)
            }.suffix(max(0, filter.limit)))
        }
    }

    public func pruneAudit(before time: Date) async throws -> Int {
        try locked { state in
            let before = state.audit.count
            state.audit.removeAll { $0.time! < time }
            return before - state.audit.count
        }
    }

    public func snapshot() async throws -> RegistrySnapshot {
        try locked { state in
            RegistrySnapshot(cluster: state.cluster, nodes: state.nodes.values.sorted { $0.id < $1.id },
                             sessions: state.sessions.values.sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) })
        }
    }

    public func restore(_ snapshot: RegistrySnapshot, replacing: Bool) async throws {
        try locked { state in
            let current = RegistrySnapshot(cluster: state.cluster, nodes: Array(state.nodes.values), sessions: Array(state.sessions.values))
            if !replacing, current.cluster != nil || !current.nodes.isEmpty || !current.sessions.isEmpty {
                throw RegistryError.notEmpty(current.counts)
            }
            state.cluster = snapshot.cluster
            state.nodes = Dictionary(uniqueKeysWithValues: snapshot.nodes.map { ($0.id, $0) })
            state.sessions = Dictionary(uniqueKeysWithValues: snapshot.sessions.map { ($0.id, $0) })
            state.nextNodeID = max(state.nextNodeID, (snapshot.nodes.map(\.id).max() ?? 0) + 1)
        }
    }

    public func close() async { state.withLock { $0.closed = true } }
}

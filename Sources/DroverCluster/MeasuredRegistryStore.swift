public import DroverKernel
public import Foundation

/// A node's registry store with every call timed and every failure counted, by operation
/// (`drover_registry_call_duration_seconds`, `drover_registry_errors_total`), whatever the
/// store behind it. It changes nothing else: each call is passed on as it is.
public struct MeasuredRegistryStore: RegistryStore {
    let base: any RegistryStore
    let metrics: NodeMetrics

    public init(_ base: any RegistryStore, metrics: NodeMetrics) {
        self.base = base
        self.metrics = metrics
    }

    private func measure<T>(_ operation: String, _ call: () async throws -> T) async throws -> T {
        let started = ContinuousClock.now
        do {
            let result = try await call()
            metrics.registryCall(operation, took: .now - started, failed: false)
            return result
        } catch {
            metrics.registryCall(operation, took: .now - started, failed: true)
            throw error
        }
    }

    public func migrate() async throws { try await measure("migrate") { try await base.migrate() } }
    public func now() async throws -> Date { try await measure("now") { try await base.now() } }
    public func cluster() async throws -> ClusterRecord? { try await measure("cluster") { try await base.cluster() } }
    public func defineCluster(_ cluster: ClusterRecord) async throws {
        try await measure("define_cluster") { try await base.defineCluster(cluster) }
    }
    public func defineClusterIfAbsent(_ cluster: ClusterRecord) async throws -> ClusterRecord {
        try await measure("define_cluster") { try await base.defineClusterIfAbsent(cluster) }
    }
    public func resetCluster() async throws { try await measure("reset_cluster") { try await base.resetCluster() } }
    public func registerNode(_ registration: NodeRegistration) async throws -> NodeRecord {
        try await measure("register_node") { try await base.registerNode(registration) }
    }
    public func heartbeat(node: Int64, load: LoadAverage) async throws -> Bool {
        try await measure("heartbeat") { try await base.heartbeat(node: node, load: load) }
    }
    public func markUnreachable(node: Int64, silentFor seconds: Double) async throws -> Bool {
        try await measure("mark_unreachable") { try await base.markUnreachable(node: node, silentFor: seconds) }
    }
    public func setNodeStatus(_ status: NodeStatus, node: Int64) async throws -> Bool {
        try await measure("set_node_status") { try await base.setNodeStatus(status, node: node) }
    }
    public func nodes() async throws -> [NodeRecord] { try await measure("nodes") { try await base.nodes() } }
    public func nodesWithClock() async throws -> NodesWithClock { try await measure("nodes") { try await base.nodesWithClock() } }
    public func deleteNode(_ id: Int64) async throws -> Bool { try await measure("delete_node") { try await base.deleteNode(id) } }
    public func createSession(_ session: SessionRecord) async throws {
        try await measure("create_session") { try await base.createSession(session) }
    }
    public func transitionSession(_ id: String, from expected: SessionOwnership, to new: SessionOwnership) async throws -> Bool {
        try await measure("transition_session") { try await base.transitionSession(id, from: expected, to: new) }
    }
    public func holdSession(_ id: String, from expected: SessionOwnership, reason: String) async throws -> Bool {
        try await measure("hold_session") { try await base.holdSession(id, from: expected, reason: reason) }
    }
    public func activeSessionCounts() async throws -> [Int64: Int] {
        try await measure("active_session_counts") { try await base.activeSessionCounts() }
    }
    public func placeNewSession(_ session: SessionRecord, userLimit: Int,
                                choose: @escaping @Sendable ([Int64: Int]) throws -> Int64) async throws -> SessionRecord {
        try await measure("place_session") { try await base.placeNewSession(session, userLimit: userLimit, choose: choose) }
    }
    public func placeExistingSession(_ id: String, from expected: SessionOwnership,
                                     choose: @escaping @Sendable ([Int64: Int]) throws -> Int64) async throws -> SessionRecord? {
        try await measure("place_session") { try await base.placeExistingSession(id, from: expected, choose: choose) }
    }
    public func touchSession(_ id: String, at time: Date) async throws {
        try await measure("touch_session") { try await base.touchSession(id, at: time) }
    }
    public func session(_ id: String) async throws -> SessionRecord? { try await measure("session") { try await base.session(id) } }
    public func sessions(matching filter: SessionFilter) async throws -> [SessionRecord] {
        try await measure("sessions") { try await base.sessions(matching: filter) }
    }
    public func deleteSession(_ id: String) async throws -> Bool { try await measure("delete_session") { try await base.deleteSession(id) } }
    public func revoke(_ revocation: CookieRevocation, now: Date) async throws {
        try await measure("revoke") { try await base.revoke(revocation, now: now) }
    }
    public func revocations(now: Date) async throws -> [CookieRevocation] {
        try await measure("revocations") { try await base.revocations(now: now) }
    }
    public func consumeTicket(_ nonce: String, expiresAt: Date, now: Date) async throws -> Bool {
        try await measure("consume_ticket") { try await base.consumeTicket(nonce, expiresAt: expiresAt, now: now) }
    }
    public func recordSignInFailure(username: String, now: Date, window: Double) async throws -> Int {
        try await measure("sign_in_failure") { try await base.recordSignInFailure(username: username, now: now, window: window) }
    }
    public func clearSignInFailures(username: String) async throws {
        try await measure("sign_in_success") { try await base.clearSignInFailures(username: username) }
    }
    public func appendAudit(_ records: [AuditRecord]) async throws {
        try await measure("append_audit") { try await base.appendAudit(records) }
    }
    public func audit(matching filter: AuditFilter) async throws -> [AuditRecord] {
        try await measure("audit") { try await base.audit(matching: filter) }
    }
    public func pruneAudit(before time: Date) async throws -> Int { try await measure("prune_audit") { try await base.pruneAudit(before: time) } }
    public func snapshot() async throws -> RegistrySnapshot { try await measure("snapshot") { try await base.snapshot() } }
    public func restore(_ snapshot: RegistrySnapshot, replacing: Bool) async throws {
        try await measure("restore") { try await base.restore(snapshot, replacing: replacing) }
    }
    public func close() async { await base.close() }
    public func connectionSecurity() async throws -> String { try await base.connectionSecurity() }
    public func serverReport() async throws -> RegistryServerReport? { try await base.serverReport() }
    public func schemaStatus() async throws -> RegistrySchemaStatus? { try await base.schemaStatus() }
    public func contractSchema() async throws -> [Int] { try await base.contractSchema() }
}

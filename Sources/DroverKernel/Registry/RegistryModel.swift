public import Foundation

/// How nodes talk to each other; part of the cluster's definition.
public enum ClusterProtocol: String, Sendable, Equatable, CaseIterable {
    case http
    case https
    case httpsNoVerify = "https-no-verify"

    /// The protocol a node with this configuration speaks.
    public init(sslEnabled: Bool, verifySSLCerts: Bool) {
        self = !sslEnabled ? .http : (verifySSLCerts ? .https : .httpsNoVerify)
    }

    /// As `list-nodes` prints it (`Http`, `Https`, `Https no verify`).
    public var displayName: String {
        switch self {
        case .http: "Http"
        case .https: "Https"
        case .httpsNoVerify: "Https no verify"
        }
    }
}

/// The one row that defines the cluster.
public struct ClusterRecord: Sendable, Equatable {
    /// HMAC-SHA256 of a fixed label under the secure cookie key, hex (``SecureCookieKey/clusterHash``).
    public var keyHash: String
    public var `protocol`: ClusterProtocol
    public var definedAt: Date
    public var definedByNode: Int64?

    public init(keyHash: String, protocol: ClusterProtocol, definedAt: Date, definedByNode: Int64?) {
        self.keyHash = keyHash
        self.protocol = `protocol`
        self.definedAt = definedAt
        self.definedByNode = definedByNode
    }
}

/// A node's status as stored. `Unreachable` is not stored: it is an `Online` row gone stale
/// (see ``NodeRecord/displayStatus(now:heartbeatInterval:)``).
public enum NodeStatus: String, Sendable, Equatable, CaseIterable {
    case online = "Online"
    case offline = "Offline"
    case offlineMode = "Offline mode"
    case deleting = "Deleting"
    case invalidSecureCookieKey = "Invalid secure cookie key"
    case protocolMismatch = "Protocol mismatch"
    /// Refused: the cluster's Online nodes run another Drover version.
    case versionMismatch = "Version mismatch"
    case failedToResolve = "Failed to resolve"
}

/// Load averages as a fraction of the node's CPUs.
public struct LoadAverage: Sendable, Equatable {
    public var one: Double
    public var five: Double
    public var fifteen: Double

    public init(one: Double, five: Double, fifteen: Double) {
        self.one = one
        self.five = five
        self.fifteen = fifteen
    }

    public static let zero = LoadAverage(one: 0, five: 0, fifteen: 0)
}

/// What a node says about itself when it registers.
public struct NodeRegistration: Sendable, Equatable {
    public var host: String
    public var ipv4: String?
    public var port: Int
    public var status: NodeStatus
    public var cpus: Int
    public var version: String
    public var configHash: String
    public var launcherFingerprint: String?
    /// The session kinds the node can run (its programs are there and users may execute them).
    public var kinds: [String]
    /// The node-to-node protocol version the node speaks (decides which nodes share a cluster).
    public var protocolVersion: Int
    /// The newest registry schema the node's build knows (a contraction waits for every
    /// `Online` node to know it).
    public var schemaKnown: Int

    public init(host: String, ipv4: String?, port: Int, status: NodeStatus, cpus: Int, version: String,
                configHash: String, launcherFingerprint: String?, kinds: [String] = [SessionKindNames.legacy], protocolVersion: Int = 1,
                schemaKnown: Int = 0) {
        self.kinds = kinds
        self.protocolVersion = protocolVersion
        self.schemaKnown = schemaKnown
        self.host = host
        self.ipv4 = ipv4
        self.port = port
        self.status = status
        self.cpus = cpus
        self.version = version
        self.configHash = configHash
        self.launcherFingerprint = launcherFingerprint
    }
}

/// Names of session kinds that the registry's values refer to.
public enum SessionKindNames {
    /// The kind `session-command` defines, and the kind of rows written before kinds existed.
    public static let legacy = "default"

    /// A node's kinds as the registry stores them: comma-separated.
    public static func joined(_ kinds: [String]) -> String { kinds.joined(separator: ",") }
    public static func split(_ text: String?) -> [String] {
        guard let text else { return [legacy] }
        return text.split(separator: ",").map(String.init)
    }
}

/// A node row.
public struct NodeRecord: Sendable, Equatable, Identifiable {
    public var id: Int64
    public var host: String
    public var ipv4: String?
    public var port: Int
    public var status: NodeStatus
    /// Written from the database's clock, UTC.
    public var lastSeen: Date
    public var load: LoadAverage
    public var cpus: Int
    public var startedAt: Date
    public var version: String
    public var configHash: String
    public var launcherFingerprint: String?
    /// Set (database clock) by a peer that found this node silent past its heartbeat and could
    /// not reach it; cleared by the node's next heartbeat or registration.
    public var unreachableSince: Date?
    /// The session kinds the node can run. A row written before kinds existed reads as the
    /// `default` kind only.
    public var kinds: [String]
    /// The node-to-node protocol version the node speaks. A row written before the registry
    /// recorded it (schema 9 and older) reads as 1, the protocol of every release before.
    public var protocolVersion: Int
    /// The newest registry schema the node's build knows; 0 for a row written before the
    /// registry recorded it (older than any contraction).
    public var schemaKnown: Int

    public init(id: Int64, host: String, ipv4: String?, port: Int, status: NodeStatus, lastSeen: Date,
                load: LoadAverage, cpus: Int, startedAt: Date, version: String, configHash: String,
                launcherFingerprint: String?, unreachableSince: Date? = nil, kinds: [String] = [SessionKindNames.legacy],
                protocolVersion: Int = 1, schemaKnown: Int = 0) {
        self.kinds = kinds
        self.protocolVersion = protocolVersion
        self.schemaKnown = schemaKnown
        self.id = id
        self.host = host
        self.ipv4 = ipv4
        self.port = port
        self.status = status
        self.lastSeen = lastSeen
        self.load = load
        self.cpus = cpus
        self.startedAt = startedAt
        self.version = version
        self.configHash = configHash
        self.launcherFingerprint = launcherFingerprint
        self.unreachableSince = unreachableSince
    }

    /// The node's release and protocol as listings show them: `0.3.0 (protocol 1)`.
    public var versionLabel: String { "\(version) (protocol \(protocolVersion))" }

    /// True when the row is `Online` but has not been refreshed for three heartbeat intervals,
    /// or a peer has found the node silent and unreachable since its last heartbeat.
    public func isUnreachable(now: Date, heartbeatInterval: Int) -> Bool {
        status == .online && (unreachableSince != nil || now.timeIntervalSince(lastSeen) > Double(3 * heartbeatInterval))
    }

    /// True when the node runs its sessions and takes calls: `Online` or in offline mode, and not
    /// `Unreachable`.
    public func isServing(now: Date, heartbeatInterval: Int) -> Bool {
        (status == .online || status == .offlineMode) && !isUnreachable(now: now, heartbeatInterval: heartbeatInterval)
    }

    /// The status an operator is shown: the stored one, or `Unreachable` for a stale `Online` row.
    public func displayStatus(now: Date, heartbeatInterval: Int) -> String {
        isUnreachable(now: now, heartbeatInterval: heartbeatInterval) ? "Unreachable" : status.rawValue
    }
}

/// A session's life-cycle state.
public enum SessionState: String, Sendable, Equatable, CaseIterable {
    case starting
    case running
    case suspending
    case suspended
    case quitting
}

/// Who owns a session and in what state: the unit of compare-and-set.
public struct SessionOwnership: Sendable, Equatable {
    /// The owning node, nil while suspended.
    public var node: Int64?
    public var state: SessionState
    public var pid: Int32?
    public var port: Int?

    public init(node: Int64?, state: SessionState, pid: Int32? = nil, port: Int? = nil) {
        self.node = node
        self.state = state
        self.pid = pid
        self.port = port
    }
}

/// A session row.
public struct SessionRecord: Sendable, Equatable, Identifiable {
    /// 128-bit random, URL-safe.
    public var id: String
    public var username: String
    public var ownership: SessionOwnership
    public var createdAt: Date
    public var lastActive: Date
    public var label: String?
    /// The session kind it runs (`kinds/<kind>.conf`; `default` is `session-command`).
    public var kind: String
    /// Why the session was stopped and waits for its user to start it again (it exceeded its
    /// memory limit): it does not start on its next request, which is told this instead. nil:
    /// a suspended session starts on its next request. Any transition of the row clears it.
    public var hold: String?

    public init(id: String, username: String, ownership: SessionOwnership, createdAt: Date, lastActive: Date, label: String?,
                kind: String = SessionKindNames.legacy, hold: String? = nil) {
        self.id = id
        self.hold = hold
        self.kind = kind
        self.username = username
        self.ownership = ownership
        self.createdAt = createdAt
        self.lastActive = lastActive
        self.label = label
    }
}

/// Which sessions ``RegistryStore/sessions(matching:)`` returns.
public struct SessionFilter: Sendable, Equatable {
    public var node: Int64?
    public var username: String?
    public var states: Set<SessionState>?

    public init(node: Int64? = nil, username: String? = nil, states: Set<SessionState>? = nil) {
        self.node = node
        self.username = username
        self.states = states
    }

    public static let all = SessionFilter()

    public func matches(_ session: SessionRecord) -> Bool {
        if let node, session.ownership.node != node { return false }
        if let username, session.username != username { return false }
        if let states, !states.contains(session.ownership.state) { return false }
        return true
    }
}

/// Where a registry's schema stands (`drover migrate-db --status`): the steps that ran, the
/// build's steps still to run, and the `Online` nodes that hold back the next contraction.
public struct RegistrySchemaStatus: Sendable, Equatable {
    /// Expand → migrate → contract: an expansion only adds what the release before can ignore;
    /// a contraction removes or tightens what only the release before needed.
    public enum Kind: String, Sendable, Equatable { case expand, contract }

    public struct Step: Sendable, Equatable {
        public var version: Int
        public var kind: Kind
        /// When it ran (epoch seconds, the database's clock); nil for steps from before the
        /// registry recorded it, and for pending ones.
        public var appliedAt: Double?

        public init(version: Int, kind: Kind, appliedAt: Double?) {
            self.version = version
            self.kind = kind
            self.appliedAt = appliedAt
        }
    }

    /// The steps that ran, in order.
    public var applied: [Step]
    /// The newest step the build asking knows.
    public var buildVersion: Int
    /// The build's steps the registry lacks, in order.
    public var pending: [Step]
    /// `Online` nodes that know too old a schema for the first pending contraction.
    public var tooOld: [NodeRecord]

    public init(applied: [Step], buildVersion: Int, pending: [Step], tooOld: [NodeRecord]) {
        self.applied = applied
        self.buildVersion = buildVersion
        self.pending = pending
        self.tooOld = tooOld
    }
    /// Nodes held back by their schema, for messages: `host:port (node ID, schema N), …`.
    public static func naming(_ nodes: [NodeRecord]) -> String {
        nodes.map { "\($0.host):\($0.port) (node \($0.id), schema \($0.schemaKnown))" }.joined(separator: ", ")
    }
}

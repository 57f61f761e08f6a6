public import Foundation

/// One row of the audit log: a state change of a session or a node, who caused it and how it
/// ended. Kept in the registry, so every node's changes are in one place (`drover audit`).
public struct AuditRecord: Sendable, Equatable, Codable {
    /// Who caused a change.
    public enum Actor: Sendable, Equatable, CustomStringConvertible {
        /// A signed-in user (or, with `auth-none`, the daemon's user), through the user API.
        case user(String)
        /// An operator, through the `drover` command or a signal.
        case admin(String)
        /// The node itself: placement, an ordered stop, crash recovery, a lost lease.
        case daemon

        public var description: String {
            switch self {
            case .user(let name): "user:\(name)"
            case .admin(let name): "admin:\(name)"
            case .daemon: "daemon"
            }
        }
    }

    /// Set by the store (its sequence), in the order rows were written.
    public var id: Int64?
    /// The database's clock when the row was written (set by the store).
    public var time: Date?
    /// `user:<name>`, `admin:<name>` or `daemon`.
    public var actor: String
    /// What changed: `session-create`, `session-suspend`, `session-resume`, `session-quit`,
    /// `session-recover` (a node's previous run left it), `session-end` (it ended unasked: exited,
    /// lease lost, droverd silent), `session-replace` (moved off a dead node), `node-offline`,
    /// `node-online`, `user-revoke`, `sign-out`.
    public var action: String
    /// What it changed: a session id, a node id, a user name.
    public var target: String
    /// The user whose session or sign-in it was (for `drover audit --user`).
    public var username: String?
    /// The node concerned: where the session runs, ran or was to run (a move's destination), the
    /// node switched on or off; the node that recorded the change when none of these applies.
    public var node: Int64?
    /// `ok` or `failed`.
    public var result: String
    /// Why, or what failed; empty when there is nothing to add.
    public var reason: String

    public init(id: Int64? = nil, time: Date? = nil, actor: Actor, action: String, target: String, username: String? = nil,
                node: Int64?, result: String = "ok", reason: String = "") {
        self.init(id: id, time: time, actor: actor.description, action: action, target: target, username: username, node: node,
                  result: result, reason: reason)
    }

    public init(id: Int64?, time: Date?, actor: String, action: String, target: String, username: String?, node: Int64?,
                result: String, reason: String) {
        self.id = id
        self.time = time
        self.actor = actor
        self.action = action
        self.target = target
        self.username = username
        self.node = node
        self.result = result
        self.reason = reason
    }
}

/// Which audit rows to read.
public struct AuditFilter: Sendable, Equatable {
    /// Rows written at or after this time.
    public var since: Date?
    /// Rows of this user's sessions and sign-ins.
    public var username: String?
    /// At most this many, the newest.
    public var limit: Int

    public init(since: Date? = nil, username: String? = nil, limit: Int = 1000) {
        self.since = since
        self.username = username
        self.limit = limit
    }
}

public import DroverKernel
import Foundation
public import Logging

/// Everything a node reports, each defined once: its name (the diagnostics record's), its log
/// level, a constant log message, and its values as fields. ``EventLog/emit(_:)`` writes the
/// structured log line (the values as metadata, never in the message) and the diagnostics
/// record together, so the two cannot drift apart.
public enum NodeEvent: Sendable {
    // MARK: the daemon
    case nodeStarting(address: String)
    case nodeStopped
    case configurationWarning(String)
    case keyGenerated(file: String)
    case authNoneInForce
    case listening(address: String, tls: Bool)

    // MARK: joining and leaving
    case clockSkew(seconds: Double)
    case clusterRedefined(differs: String)
    case nodeRefused(node: Int64, status: String)
    case clusterDefined(node: Int64, protocol: String)
    case joined(node: Int64, address: String, status: String)
    case left(node: Int64)
    case stopping(node: Int64?)
    case leaveFailed(error: String)
    case rowRemoved
    case statusChanged(node: Int64, offlineMode: Bool)
    case statusWriteFailed(status: String, error: String)
    case reloaded(balancer: String, timeout: Int, diagnostics: String)
    case reloadRefused(error: String)
    case clusterCheckFailed(error: String)

    // MARK: watching the cluster
    case heartbeatFailed(node: Int64, error: String)
    case nodeListUnreadable(error: String)
    case peerUnreachable(node: Int64, silentSeconds: Double, error: String, address: String)
    case markUnreachableFailed(node: Int64, error: String)
    case cutOff(node: Int64?, silentSeconds: Double)
    /// The alive ticker told no guard this node is alive: it counts itself cut off.
    case aliveWithheld(registrySilent: Double, peerSilent: Double)
    /// The alive ticker woke `late` seconds after its tick was due, or its tick took `took`
    /// seconds: the guards heard nothing for that long (the machine, or this node, was held up).
    case aliveTickLate(late: Double, took: Double, guards: Int)
    case reconnected(node: Int64?)
    case peerCallFailed(peer: Int64, call: String, error: String, address: String)
    /// A peer's notice (named as the notice is), with its details.
    case peerNotice(name: String, details: [(String, String)], from: String)

    // MARK: requests refused
    case statusRefused(remote: String)
    case internalCallRefused(path: String, remote: String, reason: String)
    case hopRefused(reason: String)
    case signInRefused(user: String, address: String, reason: String)
    case signInThrottled(user: String, address: String, seconds: Int)
    case webSocketOriginRefused(session: String, origin: String)
    /// A session origin's sign-in ticket presented again (``RegistryStore/consumeTicket(_:expiresAt:now:)``).
    case ticketReplayed(session: String)
    case signedOut(user: String)

    // MARK: sessions
    case startConnectRetry(peer: String, reason: String)
    case sessionStarted(session: String, user: String, pid: Int32, isolation: String)
    case sessionStartFailed(session: String, error: String)
    case sessionKilledAfterGrace(session: String)
    case sessionStopped(session: String, user: String, how: StopOutcome)
    case sessionSuspendFailed(session: String, error: String)
    case sessionEnded(session: String, reason: String, detail: String)
    case sessionLockRefreshFailed(session: String, error: String)
    case sessionLeaseEnded(session: String, reason: String, detail: String)
    case sessionRePlaced(session: String, nodeStatus: String)
    case previousRunUnreadable(error: String)
    case sessionReleased(session: String, was: String)
    case sessionReleaseFailed(session: String, error: String)
    case sessionsReleased(count: Int)
    case auditRowsDropped(count: Int)
    case sessionStopCompleted(session: String, was: String)
    case sessionsSuspendedBeforeLeaving(count: Int)
    case sessionTakenAway(session: String, row: String)
    case configurationDiffers(node: Int64, what: String)
    case orphanedStartFreed(session: String)

    /// How a session of this node stopped.
    public enum StopOutcome: String, Sendable {
        case suspended, quit, exited
    }

    /// The diagnostics record's name (`event=` in its line).
    public var name: String {
        switch self {
        case .nodeStarting: "node-starting"
        case .nodeStopped: "node-stopped"
        case .configurationWarning: "configuration-warning"
        case .keyGenerated: "key-generated"
        case .authNoneInForce: "auth-none"
        case .listening: "listening"
        case .clockSkew: "clock-skew"
        case .clusterRedefined: "cluster-redefined"
        case .nodeRefused: "node-refused"
        case .clusterDefined: "cluster-defined"
        case .joined: "node-joined"
        case .left: "node-left"
        case .stopping: "node-stopping"
        case .leaveFailed: "leave-failed"
        case .rowRemoved: "node-row-removed"
        case .statusChanged: "node-status"
        case .statusWriteFailed: "node-status-failed"
        case .reloaded: "reload"
        case .reloadRefused: "reload-failed"
        case .clusterCheckFailed: "cluster-check-failed"
        case .heartbeatFailed: "heartbeat-failed"
        case .nodeListUnreadable: "node-list-unreadable"
        case .peerUnreachable: "node-unreachable"
        case .markUnreachableFailed: "mark-unreachable-failed"
        case .cutOff: "node-cut-off"
        case .aliveWithheld: "alive-withheld"
        case .aliveTickLate: "alive-tick-late"
        case .reconnected: "node-reconnected"
        case .peerCallFailed: "peer-call-failed"
        case .peerNotice(let name, _, _): name
        case .statusRefused: "status-refused"
        case .internalCallRefused: "internal-call-refused"
        case .hopRefused: "hop-refused"
        case .signInRefused: "sign-in-refused"
        case .signInThrottled: "sign-in-throttled"
        case .webSocketOriginRefused: "websocket-origin-refused"
        case .ticketReplayed: "session-ticket-replayed"
        case .signedOut: "signed-out"
        case .startConnectRetry: "start-connect-retry"
        case .sessionStarted: "session-started"
        case .sessionStartFailed: "session-start-failed"
        case .sessionKilledAfterGrace: "session-killed"
        case .sessionStopped(_, _, let how): "session-\(how == .suspended ? "suspended" : how == .quit ? "quit" : "exited")"
        case .sessionSuspendFailed: "session-suspend-failed"
        case .sessionEnded: "session-ended"
        case .sessionLockRefreshFailed: "session-lock-refresh-failed"
        case .sessionLeaseEnded: "session-lease-ended"
        case .sessionRePlaced: "session-re-placed"
        case .previousRunUnreadable: "previous-sessions-unreadable"
        case .sessionReleased: "session-released"
        case .sessionReleaseFailed: "session-release-failed"
        case .sessionsReleased: "sessions-released"
        case .auditRowsDropped: "audit-rows-dropped"
        case .sessionStopCompleted: "session-stop-completed"
        case .sessionsSuspendedBeforeLeaving: "sessions-suspended-before-leaving"
        case .sessionTakenAway: "session-taken-away"
        case .configurationDiffers: "configuration-differs"
        case .orphanedStartFreed: "orphaned-start-freed"
        }
    }

    public var level: Logger.Level {
        switch self {
        case .nodeStarting, .nodeStopped, .listening, .joined, .left, .peerNotice, .clusterDefined, .sessionStarted, .sessionStopped,
             .sessionReleased:
            .info
        case .keyGenerated, .clusterRedefined, .statusChanged, .stopping, .reloaded, .reconnected, .signInRefused, .signInThrottled, .webSocketOriginRefused, .ticketReplayed, .signedOut, .startConnectRetry,
             .sessionRePlaced, .sessionsReleased, .orphanedStartFreed, .sessionStopCompleted, .sessionsSuspendedBeforeLeaving:
            .notice
        case .configurationWarning, .authNoneInForce, .clockSkew, .nodeRefused, .rowRemoved, .nodeListUnreadable, .peerUnreachable,
             .markUnreachableFailed, .peerCallFailed, .statusRefused, .internalCallRefused, .hopRefused, .sessionStartFailed,
             .sessionKilledAfterGrace, .sessionEnded, .sessionLockRefreshFailed, .sessionLeaseEnded, .sessionTakenAway,
             .configurationDiffers, .aliveWithheld, .aliveTickLate:
            .warning
        case .leaveFailed, .statusWriteFailed, .reloadRefused, .clusterCheckFailed, .heartbeatFailed, .sessionSuspendFailed,
             .previousRunUnreadable, .sessionReleaseFailed, .auditRowsDropped:
            .error
        case .cutOff:
            .critical
        }
    }

    /// The log line's text: constant for each event (and each variant of it).
    public var message: String {
        switch self {
        case .nodeStarting: "starting"
        case .nodeStopped: "stopped"
        case .configurationWarning: "configuration warning"
        case .keyGenerated: "generated a new secure cookie key"
        case .authNoneInForce: "auth-none=1: every visitor is this daemon's own user; use it only on a single-user machine"
        case .listening: "listening"
        case .clockSkew: "this machine's clock is away from the database's; synchronise clocks (e.g. chrony), cross-node locks depend on it"
        case .clusterRedefined: "redefining the cluster: no node is online and this node's settings differ"
        case .nodeRefused: "the cluster refused this node"
        case .clusterDefined: "defined the cluster"
        case .joined: "joined the cluster"
        case .left: "left the cluster"
        case .stopping: "stopping: left placement; suspending this node's sessions, then closing its connections"
        case .leaveFailed: "cannot mark this node Offline"
        case .rowRemoved: "this node's row was removed while it ran; registering again"
        case .statusChanged(_, let offlineMode):
            offlineMode ? "offline mode: serving existing sessions, taking no new ones" : "back online: taking new sessions"
        case .statusWriteFailed: "cannot record this node's status"
        case .reloaded: "reloaded load-balancer"
        case .reloadRefused: "reload refused, keeping the running settings"
        case .clusterCheckFailed: "cannot check the cluster definition"
        case .heartbeatFailed: "heartbeat failed, retrying next interval"
        case .nodeListUnreadable: "cannot read the node list"
        case .peerUnreachable: "a node is unreachable: no heartbeat and no answer"
        case .markUnreachableFailed: "cannot mark a node unreachable"
        case .cutOff: "this node reaches neither the registry nor any peer: letting its sessions end so other nodes can take them"
        case .reconnected: "this node reaches the cluster again"
        case .aliveWithheld: "not telling the session guards this node is alive: it counts itself cut off, so its sessions will end"
        case .aliveTickLate: "the session guards heard late that this node is alive: it was held up (a loaded or paused machine)"
        case .peerCallFailed: "cannot tell a peer"
        case .peerNotice: "peer event"
        case .statusRefused: "refused the status endpoint: not loopback and not a cluster node"
        case .internalCallRefused: "refused internal call"
        case .hopRefused: "refused a proxied request with a bad hop signature"
        case .signInRefused: "sign-in refused"
        case .webSocketOriginRefused: "refused a WebSocket from a page of another origin"
        case .ticketReplayed: "refused a session's sign-in ticket used already (the cluster takes each once)"
        case .signedOut: "signed out: the cookie is revoked on every node"
        case .signInThrottled: "sign-in refused at once: too many failed sign-ins from this address or for this user"
        case .startConnectRetry: "could not connect to the session's node to start it; trying again"
        case .sessionStarted: "session started"
        case .sessionStartFailed: "session failed to start"
        case .sessionKilledAfterGrace: "session did not save and exit in time; killed"
        case .sessionStopped(_, _, let how): "session \(how.rawValue)"
        case .sessionSuspendFailed: "cannot suspend a session"
        case .sessionEnded: "session ended on its own"
        case .sessionLockRefreshFailed: "a refresh of a session's lock failed"
        case .sessionLeaseEnded: "a session's guard ended it: its lease is gone"
        case .sessionRePlaced: "re-placing a session whose node is not serving"
        case .previousRunUnreadable: "cannot read the sessions this node owned before it restarted"
        case .sessionReleased: "freed a session left by this node's previous run"
        case .sessionReleaseFailed: "cannot free a session left by this node's previous run"
        case .sessionsReleased: "freed the sessions left by this node's previous run"
        case .auditRowsDropped: "audit rows were dropped: the registry could not be written for too long"
        case .sessionStopCompleted: "finished a stop left half done"
        case .sessionsSuspendedBeforeLeaving: "suspended this node's sessions before leaving"
        case .sessionTakenAway: "a session this node runs is no longer its own in the registry; ending this copy"
        case .configurationDiffers:
            "this node's settings differ from most Online nodes'; keep the configuration directory (and launcher.pub/launcher.pem) identical on every node"
        case .orphanedStartFreed: "freed a session placed on this node whose start never came"
        }
    }

    /// The event's values, in the order its diagnostics line shows them.
    public var fields: [(String, String)] {
        switch self {
        case .nodeStopped, .authNoneInForce, .rowRemoved:
            []
        case .nodeStarting(let address):
            [("address", address)]
        case .configurationWarning(let text):
            [("warning", text)]
        case .keyGenerated(let file):
            [("file", file)]
        case .listening(let address, let tls):
            [("address", address), ("tls", tls ? "1" : "0")]
        case .clockSkew(let seconds):
            [("seconds", Self.decimal(seconds, places: 3))]
        case .clusterRedefined(let differs):
            [("differs", differs)]
        case .nodeRefused(let node, let status):
            [("node", String(node)), ("status", status)]
        case .clusterDefined(let node, let clusterProtocol):
            [("node", String(node)), ("protocol", clusterProtocol)]
        case .joined(let node, let address, let status):
            [("node", String(node)), ("address", address), ("self", "1"), ("status", status)]
        case .left(let node):
            [("node", String(node)), ("self", "1")]
        case .stopping(let node):
            [("node", node.map(String.init) ?? "-"), ("self", "1")]
        case .leaveFailed(let error), .reloadRefused(let error), .clusterCheckFailed(let error), .nodeListUnreadable(let error),
             .previousRunUnreadable(let error):
            [("error", error)]
        case .statusChanged(let node, let offlineMode):
            [("node", String(node)), ("status", offlineMode ? "OfflineMode" : "Online")]
        case .statusWriteFailed(let status, let error):
            [("status", status), ("error", error)]
        case .reloaded(let balancer, let timeout, let diagnostics):
            [("balancer", balancer), ("timeout", String(timeout)), ("diagnostics", diagnostics)]
        case .heartbeatFailed(let node, let error), .markUnreachableFailed(let node, let error):
            [("node", String(node)), ("error", error)]
        case .peerUnreachable(let node, let silentSeconds, let error, let address):
            [("node", String(node)), ("silent", Self.decimal(silentSeconds, places: 1)), ("error", error), ("address", address)]
        case .cutOff(let node, let silentSeconds):
            [("node", node.map { String($0) } ?? "?"), ("silent", Self.decimal(silentSeconds, places: 1))]
        case .reconnected(let node):
            [("node", node.map { String($0) } ?? "?")]
        case .aliveWithheld(let registrySilent, let peerSilent):
            [("registry_silent", Self.decimal(registrySilent, places: 1)), ("peer_silent", Self.decimal(peerSilent, places: 1))]
        case .aliveTickLate(let late, let took, let guards):
            [("late", Self.decimal(late, places: 2)), ("took", Self.decimal(took, places: 2)), ("guards", String(guards))]
        case .peerCallFailed(let peer, let call, let error, let address):
            [("peer", String(peer)), ("event", call), ("error", error), ("address", address)]
        case .peerNotice(_, let details, let from):
            details + [("from", from)]
        case .statusRefused(let remote):
            [("remote", remote)]
        case .internalCallRefused(let path, let remote, let reason):
            [("path", path), ("remote", remote), ("reason", reason)]
        case .hopRefused(let reason):
            [("reason", reason)]
        case .signInRefused(let user, let address, let reason):
            [("user", user), ("address", address), ("reason", reason)]
        case .signedOut(let user):
            [("user", user)]
        case .webSocketOriginRefused(let session, let origin):
            [("session", session), ("origin", origin)]
        case .ticketReplayed(let session):
            [("session", session)]
        case .signInThrottled(let user, let address, let seconds):
            [("user", user), ("address", address), ("retry_after", String(seconds))]
        case .startConnectRetry(let peer, let reason):
            [("peer", peer), ("reason", reason)]
        case .sessionStarted(let session, let user, let pid, let isolation):
            [("session", session), ("user", user), ("pid", String(pid)), ("isolation", isolation)]
        case .sessionStartFailed(let session, let error), .sessionSuspendFailed(let session, let error),
             .sessionLockRefreshFailed(let session, let error), .sessionReleaseFailed(let session, let error):
            [("session", session), ("error", error)]
        case .sessionKilledAfterGrace(let session), .orphanedStartFreed(let session):
            [("session", session)]
        case .sessionStopped(let session, let user, _):
            [("session", session), ("user", user)]
        case .sessionEnded(let session, let reason, let detail), .sessionLeaseEnded(let session, let reason, let detail):
            [("session", session), ("reason", reason), ("detail", detail)]
        case .sessionRePlaced(let session, let nodeStatus):
            [("session", session), ("node-status", nodeStatus)]
        case .sessionReleased(let session, let was), .sessionStopCompleted(let session, let was):
            [("session", session), ("was", was)]
        case .sessionsReleased(let count), .sessionsSuspendedBeforeLeaving(let count), .auditRowsDropped(let count):
            [("count", String(count))]
        case .sessionTakenAway(let session, let row):
            [("session", session), ("row", row)]
        case .configurationDiffers(let node, let what):
            [("node", String(node)), ("differs", what)]
        }
    }

    /// `value` with `places` decimals (`%f` never writes an exponent).
    static func decimal(_ value: Double, places: Int) -> String {
        String(format: "%.\(places)f", value)
    }
}

/// Where a node's events go: its log, its diagnostics sink (when one is configured) and its
/// observer (the node's metrics).
extension NodeEvent {
    /// Text a client chose (a path, an Origin, a destination), as a log line may carry it: at
    /// most 200 characters, control characters, quotes and backslashes escaped.
    public static func bounded(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars.prefix(200) {
            switch scalar.value {
            case 0x5c: out += "\\\\"
            case 0x22: out += "\\\""
            case 0..<0x20, 0x7f, 0x80..<0xa0: out += String(format: "\\x%02x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return text.unicodeScalars.count > 200 ? out + "…" : out
    }
}

public struct EventLog: Sendable {
    public let logger: Logger
    public let diagnostics: Diagnostics
    let observer: (@Sendable (NodeEvent) -> Void)?

    public init(logger: Logger, diagnostics: Diagnostics, observer: (@Sendable (NodeEvent) -> Void)? = nil) {
        self.logger = logger
        self.diagnostics = diagnostics
        self.observer = observer
    }

    /// Writes `event`'s log line and its diagnostics record, and tells the observer.
    public func emit(_ event: NodeEvent) {
        observer?(event)
        let fields = event.fields
        if logger.logLevel <= event.level {
            var metadata = Logger.Metadata()
            metadata["event"] = .string(event.name)
            for (name, value) in fields { metadata[name] = .string(value) }
            logger.log(level: event.level, Logger.Message(stringLiteral: event.message), metadata: metadata)
        }
        diagnostics.record(event.name, fields: fields)
    }
}

extension Diagnostics {
    /// Records `event` alone, where there is no log to write it to as well (``EventLog/emit(_:)``
    /// does both).
    public func record(_ event: NodeEvent) {
        record(event.name, fields: event.fields)
    }
}

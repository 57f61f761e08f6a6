public import DroverKernel
import Foundation
public import NIOHTTP1

/// The paths a node serves besides its users' API, in one place.
public enum NodeEndpoint {
    /// Liveness, answered on the event loop (`GET`, unsigned).
    public static let healthCheck = "/health-check"
    /// Readiness for an external load balancer (`GET`, unsigned, answered on the event loop):
    /// 200 while the node takes new sessions; 503 while it is in offline mode (`drover offline`,
    /// a drain), stopping or cut off. `/health-check` stays the liveness check.
    public static let ready = "/ready"
    /// The seed's status report (`GET`, unsigned; loopback and cluster nodes only).
    public static let status = "/load-balancer/status"
    /// Prometheus metrics (`GET`), for this machine, the cluster's nodes and
    /// `metrics-allowed-addresses`.
    public static let metrics = "/metrics"
    /// Every signed internal call's path starts with this.
    public static let internalPrefix = "/load-balancer/"
}

/// Every call one node (or `drover` on the node's own machine) makes on another's signed
/// internal API (`/load-balancer/<name>`), with its payload. The client builds requests from
/// it, the server decodes requests into it and answers with an exhaustive `switch`, and the
/// command line uses it too: a call that one side sends and the other does not understand
/// cannot compile.
public enum InternalCall: Sendable, Equatable {
    /// Answers `pong`: the key and the clocks agree.
    case ping
    /// A change the peers should hear of at once (they re-read the node list, or forget a route).
    case notice(PeerNotice)
    /// Start a session placed on the receiving node; answers 200 with the session.
    case launch(SessionCall, isNew: Bool)
    /// Suspend (save, then stop) a session running on the receiving node; answers 204.
    case suspend(SessionCall)
    /// Quit a session running on the receiving node; answers 204.
    case quit(SessionCall)
    /// Suspend every session of the receiving node, for the operator named `by` (the audit
    /// log's actor; nil from an older `drover`); answers ``SuspendAllAnswer``.
    case suspendAll(by: String?)
    /// Put the receiving node in offline mode or take it out, for the operator named (the admin
    /// dashboard's action); answers 204.
    case offlineMode(OfflineModeCall)
    /// Move a session (suspend it where it runs, start it at once elsewhere: on the node named,
    /// or where the balancer places it), for the operator named; answers 200 with the session
    /// as it runs now. `drover drain` sends one per session of the node it drains.
    case move(MoveCall)
    /// Re-read `load-balancer` now (`drover reload`); answers 200 with the settings in force,
    /// or 409 with why the file was refused (the running settings are kept).
    case reload
    /// The memory and CPU the receiving node's sessions use now, and their limits (the admin
    /// dashboard reads them for sessions of other nodes); answers `[SessionResourceReport]`.
    case resources
    #if DROVER_TEST_NEXT_RELEASE
    /// The rolling-upgrade test's new call (`DROVER_TEST_NEXT_RELEASE`): the receiving node's
    /// build; answers ``BuildAnswer``. A node of the release before answers 404 (an unknown call,
    /// ``PeerRefusal/isUnknownCall``), which the caller handles.
    case build

    /// The answer to ``build``.
    public struct BuildAnswer: Codable, Sendable, Equatable {
        public var release: String
        public var `protocol`: Int
        public init(release: String, protocol version: Int) {
            self.release = release
            self.protocol = version
        }
    }
    #endif

    /// A session named in a call.
    public struct SessionCall: Codable, Sendable, Equatable {
        public var id: String
        public init(id: String) { self.id = id }
    }

    /// The body of ``offlineMode(_:)``.
    public struct OfflineModeCall: Codable, Sendable, Equatable {
        public var offline: Bool
        public var by: String
        public init(offline: Bool, by: String) {
            self.offline = offline
            self.by = by
        }
    }

    /// The body of ``move(_:)``.
    public struct MoveCall: Codable, Sendable, Equatable {
        public var id: String
        /// nil: where the balancer places it.
        public var to: Int64?
        public var by: String
        public init(id: String, to: Int64? = nil, by: String) {
            self.id = id
            self.to = to
            self.by = by
        }
    }

    /// The body of ``suspendAll(by:)``.
    struct SuspendAllBody: Codable {
        var by: String?
    }

    /// The answer to ``suspendAll(by:)``.
    public struct SuspendAllAnswer: Codable, Sendable, Equatable {
        public var suspended: Int
        public init(suspended: Int) { self.suspended = suspended }
    }

    /// What a launch call carries: the session, and whether this is its first start.
    struct LaunchBody: Codable {
        var id: String
        var new: Bool?
    }

    public var method: HTTPMethod {
        switch self {
        case .ping, .resources: .GET
        #if DROVER_TEST_NEXT_RELEASE
        case .build: .GET
        #endif
        default: .POST
        }
    }

    /// The call's name, the last part of its path.
    public var name: String {
        switch self {
        case .ping: "ping"
        case .notice(let notice): notice.name
        case .launch: "launch"
        case .suspend: "suspend"
        case .quit: "quit"
        case .suspendAll: "suspend-all"
        case .offlineMode: "offline-mode"
        case .move: "move"
        case .reload: "reload"
        case .resources: "resources"
        #if DROVER_TEST_NEXT_RELEASE
        case .build: "build"
        #endif
        }
    }

    public var path: String { NodeEndpoint.internalPrefix + name }

    /// The JSON body (empty for calls without one).
    public var body: [UInt8] {
        switch self {
        case .ping, .reload, .resources: []
        #if DROVER_TEST_NEXT_RELEASE
        case .build: []
        #endif
        case .suspendAll(let by): by.map { Self.encode(SuspendAllBody(by: $0)) } ?? []
        case .notice(let notice): notice.body
        case .launch(let session, let isNew): Self.encode(LaunchBody(id: session.id, new: isNew ? true : nil))
        case .suspend(let session), .quit(let session): Self.encode(session)
        case .offlineMode(let call): Self.encode(call)
        case .move(let call): Self.encode(call)
        }
    }

    static func encode(_ value: some Encodable) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        // Encoding these plain structs cannot fail.
        return (try? encoder.encode(value)).map(Array.init) ?? []
    }

    static func decode<T: Decodable>(_ type: T.Type, _ body: [UInt8], call name: String) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(body))
        } catch {
            throw Refusal.badBody(name, expected: String(describing: type))
        }
    }

    /// Why a request is not a call this node knows.
    public enum Refusal: Error, Equatable, CustomStringConvertible {
        case unknown(method: String, path: String)
        case badBody(String, expected: String)

        /// How the answer to a call of another release begins (``PeerRefusal/isUnknownCall``).
        static let unknownPrefix = "no internal call"

        public var description: String {
            switch self {
            case .unknown(let method, let path): "\(Self.unknownPrefix) \(method) \(path); are all nodes running the same Drover version?"
            case .badBody(let name, let expected): "the body of \(name) is not the JSON of \(expected)"
            }
        }
    }

    /// The call a request makes (its signature already checked).
    public init(method: HTTPMethod, path: String, body: [UInt8]) throws(Refusal) {
        guard path.hasPrefix(NodeEndpoint.internalPrefix) else { throw .unknown(method: method.rawValue, path: path) }
        let name = String(path.dropFirst(NodeEndpoint.internalPrefix.count))
        do {
            switch (method, name) {
            case (.GET, "ping"):
                self = .ping
            case (.GET, "resources"):
                self = .resources
            #if DROVER_TEST_NEXT_RELEASE
            case (.GET, "build"):
                self = .build
            #endif
            case (.POST, "launch"):
                let launch = try Self.decode(LaunchBody.self, body, call: name)
                self = .launch(SessionCall(id: launch.id), isNew: launch.new ?? false)
            case (.POST, "suspend"):
                self = .suspend(try Self.decode(SessionCall.self, body, call: name))
            case (.POST, "quit"):
                self = .quit(try Self.decode(SessionCall.self, body, call: name))
            case (.POST, "suspend-all"):
                self = .suspendAll(by: body.isEmpty ? nil : try Self.decode(SuspendAllBody.self, body, call: name).by)
            case (.POST, "reload"):
                self = .reload
            case (.POST, "offline-mode"):
                self = .offlineMode(try Self.decode(OfflineModeCall.self, body, call: name))
            case (.POST, "move"):
                self = .move(try Self.decode(MoveCall.self, body, call: name))
            case (.POST, _):
                guard let notice = try PeerNotice(name: name, body: body) else { throw Refusal.unknown(method: method.rawValue, path: path) }
                self = .notice(notice)
            default:
                throw Refusal.unknown(method: method.rawValue, path: path)
            }
        } catch let refusal as Refusal {
            throw refusal
        } catch {
            throw .badBody(name, expected: "its payload")
        }
    }
}

/// A change the other nodes hear of at once, sent by the node it concerns (or by `drover` for
/// a deleted node); without it they would notice at their next heartbeat.
public enum PeerNotice: Sendable, Equatable {
    case nodeJoined(NodeJoined)
    case nodeLeft(NodeRef)
    case nodeDeleted(NodeRef)
    case nodeStatus(NodeStatusChange)
    /// A session changed owner: forget its route.
    case sessionMoved(InternalCall.SessionCall)
    /// Sign-ins were revoked (sign-out, `drover revoke-user`): read the registry's revocations.
    case revocationsChanged

    public struct NodeRef: Codable, Sendable, Equatable {
        public var id: Int64
        public init(id: Int64) { self.id = id }
    }

    public struct NodeJoined: Codable, Sendable, Equatable {
        public var id: Int64
        public var host: String
        public var port: Int
        public init(id: Int64, host: String, port: Int) {
            self.id = id
            self.host = host
            self.port = port
        }
    }

    public struct NodeStatusChange: Codable, Sendable, Equatable {
        public var id: Int64
        public var status: String
        public init(id: Int64, status: NodeStatus) {
            self.id = id
            self.status = status.rawValue
        }
    }

    public var name: String {
        switch self {
        case .nodeJoined: "node-joined"
        case .nodeLeft: "node-left"
        case .nodeDeleted: "node-deleted"
        case .nodeStatus: "node-status"
        case .sessionMoved: "session-moved"
        case .revocationsChanged: "revocations-changed"
        }
    }

    var body: [UInt8] {
        switch self {
        case .nodeJoined(let joined): InternalCall.encode(joined)
        case .nodeLeft(let node), .nodeDeleted(let node): InternalCall.encode(node)
        case .nodeStatus(let change): InternalCall.encode(change)
        case .sessionMoved(let session): InternalCall.encode(session)
        case .revocationsChanged: Array("{}".utf8)
        }
    }

    /// The notice named `name`, or nil when there is none of that name.
    init?(name: String, body: [UInt8]) throws {
        switch name {
        case "node-joined": self = .nodeJoined(try InternalCall.decode(NodeJoined.self, body, call: name))
        case "node-left": self = .nodeLeft(try InternalCall.decode(NodeRef.self, body, call: name))
        case "node-deleted": self = .nodeDeleted(try InternalCall.decode(NodeRef.self, body, call: name))
        case "node-status": self = .nodeStatus(try InternalCall.decode(NodeStatusChange.self, body, call: name))
        case "session-moved": self = .sessionMoved(try InternalCall.decode(InternalCall.SessionCall.self, body, call: name))
        case "revocations-changed": self = .revocationsChanged
        default: return nil
        }
    }

    /// The fields a diagnostics record of the notice carries.
    public var details: [(String, String)] {
        switch self {
        case .nodeJoined(let joined): [("node", String(joined.id))]
        case .nodeLeft(let node), .nodeDeleted(let node): [("node", String(node.id))]
        case .nodeStatus(let change): [("node", String(change.id)), ("status", change.status)]
        case .sessionMoved(let session): [("session", session.id)]
        case .revocationsChanged: []
        }
    }
}

extension NodeClient {
    /// Makes `call` on `node` and returns its answer, whatever its status.
    public func call(_ call: InternalCall, on node: NodeRecord, answerWithin: AnswerBound? = nil) async throws -> Response {
        try await send(call.method, call.path, body: call.body, to: node.ipv4 ?? node.host, port: node.port, name: Self.tlsName(of: node),
                       answerWithin: answerWithin)
    }

    /// Makes `call` on the node at `host:port` (the command line's own node).
    public func call(_ call: InternalCall, host: String, port: Int) async throws -> Response {
        try await send(call.method, call.path, body: call.body, to: host, port: port)
    }

    /// Makes `typed` on `node` and decodes its answer; another status than its success is a
    /// ``PeerRefusal``.
    public func call<Answer>(_ typed: TypedCall<Answer>, on node: NodeRecord, answerWithin: AnswerBound? = nil) async throws -> Answer {
        try typed.answer(try await call(typed.call, on: node, answerWithin: answerWithin))
    }

    /// ``call(_:on:answerWithin:)`` to the node at `host:port`.
    public func call<Answer>(_ typed: TypedCall<Answer>, host: String, port: Int) async throws -> Answer {
        try typed.answer(try await call(typed.call, host: host, port: port))
    }

    /// Tells every node of `peers` about `notice`, all at once; the nodes that could not be
    /// told, with why, are returned (they will notice at their next heartbeat).
    public func tell(_ peers: [NodeRecord], _ notice: PeerNotice) async -> [(node: NodeRecord, reason: String)] {
        await withTaskGroup(of: (NodeRecord, String)?.self) { group in
            for peer in peers {
                group.addTask {
                    do {
                        _ = try await self.call(TypedCall.notice(notice), on: peer)
                        return nil
                    } catch let refusal as PeerRefusal {
                        return (peer, "answered \(refusal.status): \(refusal.message)")
                    } catch {
                        return (peer, "\(error)")
                    }
                }
            }
            var failed: [(node: NodeRecord, reason: String)] = []
            for await failure in group {
                if let failure { failed.append((failure.0, failure.1)) }
            }
            return failed
        }
    }
}

/// The opening of a session hop (docs/PROTOCOL.md, hops), part of the wire contract beside the
/// calls: the request one node sends the owner of a session to join a client's connection to
/// it — `GET /s/<id>/` with `Upgrade: drover-session`, the hop's headers, and the node-to-node
/// signature over ``signedBody(user:)`` bound to the owner's address. The owner verifies it
/// once and then only splices bytes.
public enum SessionHopOpening {
    /// The `Upgrade` protocol of an opening.
    public static let protocolName = "drover-session"
    /// Marks a request as part of a hop (a client's own such header is removed at the edge).
    public static let hopHeader = "X-Drover-Hop"
    /// The session's user, as the first node signed it in.
    public static let userHeader = "X-Drover-Hop-User"

    /// What the signature covers in place of a body: the splice, for this user.
    public static func signedBody(user: String) -> [UInt8] { Array("proxy-splice\n\(user)".utf8) }

    /// The text of an opening to the node at `destination` (`host:port`) for session `id` of
    /// `user`, signed now with `key`.
    public static func request(session id: String, user: String, destination: String, key: SecureCookieKey) -> String {
        let path = "/s/\(id)/"
        var text = "GET \(path) HTTP/1.1\r\nHost: \(destination)\r\nConnection: Upgrade\r\nUpgrade: \(protocolName)\r\n"
            + "\(hopHeader): 1\r\n\(userHeader): \(user)\r\n"
        for (name, value) in InternalRequestSignature.headers(method: "GET", path: path, body: signedBody(user: user), destination: destination, key: key) {
            text += "\(name): \(value)\r\n"
        }
        return text + "\r\n"
    }
}

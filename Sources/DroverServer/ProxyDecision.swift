public import DroverCluster
public import NIOCore
public import NIOHTTP1
public import NIOSSL

/// Where a proxied request is sent: a session's Unix socket on this node, or another node
/// (with the name its certificate must carry, sent as SNI, and how long connecting may take:
/// `timeout` in load-balancer, as for every peer call).
public enum Upstream: Sendable, Equatable, CustomStringConvertible {
    case unix(path: String)
    /// A session of this node, reached by its kind's endpoint (``SessionConnector`` verifies
    /// the listener before a byte is sent).
    case session(SessionEndpoint)
    case tcp(host: String, port: Int, name: String? = nil, connectTimeout: TimeAmount = .seconds(10))
    /// Another node, on a connection that node joins to the session's socket: it opens with
    /// `opening` (a signed request, answered `101`), and the requests that follow reach the
    /// session as they are, so the owner does no HTTP work for them (``HopOpening``).
    case node(host: String, port: Int, name: String?, connectTimeout: TimeAmount, opening: HopOpening)

    public var description: String {
        switch self {
        case .unix(let path): "unix:\(path)"
        case .session(let endpoint): endpoint.description
        case .tcp(let host, let port, let name, _), .node(let host, let port, let name, _, _):
            name.map { "\($0) (\(host)):\(port)" } ?? "\(host):\(port)"
        }
    }
}

/// The request that opens a connection to another node for one session of one user
/// (docs/PROTOCOL.md, hops): `GET /s/<id>/` with `Upgrade: drover-session` and the hop's
/// signed headers. The owner verifies it once, refuses a replay, answers `101` and joins the
/// connection to the session's socket; what follows on the connection is the session's traffic.
/// Two openings are the same connection's when they name the same session and user.
public struct HopOpening: Sendable, Equatable {
    public let session: String
    public let user: String
    /// The opening's bytes, signed when called (a fresh timestamp and nonce for each connection).
    public let request: @Sendable () -> ByteBuffer

    public init(session: String, user: String, request: @escaping @Sendable () -> ByteBuffer) {
        self.session = session
        self.user = user
        self.request = request
    }

    public static func == (lhs: HopOpening, rhs: HopOpening) -> Bool {
        lhs.session == rhs.session && lhs.user == rhs.user
    }

    /// The `Upgrade` token of an opening.
    public static let protocolName = SessionHopOpening.protocolName
}

/// Where a proxied request goes, or the answer to give instead.
public enum ProxyDecision: Sendable {
    /// Forward to `upstream` (TLS when `tls` is set), adding `headers`.
    /// `stripping` is taken off the front of the request's path (a kind with `base-path=strip`).
    case forward(Upstream, tls: NIOSSLContext?, headers: [(String, String)], stripping: String? = nil, onFailure: @Sendable () -> Void)
    /// The request is another node's verified ``HopOpening``: answer `101` and join the
    /// connection to the session at `endpoint`.
    case splice(SessionEndpoint, onFailure: @Sendable () -> Void)
    case respond(HTTPResponse)
}

/// Decides where `/s/<id>/…` requests go.
public protocol ProxyResolver: Sendable {
    /// An answer from memory, without waiting, or nil when the slow path must run.
    func cachedDecision(for head: HTTPRequestHead) -> ProxyDecision?
    /// The full decision: may read the registry, and start or move the session.
    func decision(for head: HTTPRequestHead) async -> ProxyDecision
    /// The same, for a request whose browser-side origin a trusted proxy told
    /// (`www-trusted-proxies`): `origin` is `scheme://host` as the browser used them, nil when
    /// the node's own view stands. The defaults ignore it.
    func cachedDecision(for head: HTTPRequestHead, origin: String?) -> ProxyDecision?
    func decision(for head: HTTPRequestHead, origin: String?) async -> ProxyDecision
    /// The request `head` became a WebSocket tunnel on `channel` (the client's).
    /// - Returns: what to call when the client sends through the tunnel (at most once a
    ///   second), or nil.
    func tunnelOpened(_ channel: any Channel, request head: HTTPRequestHead) -> (@Sendable () -> Void)?
    /// The proxied request `head` was answered with `status`, the answer's head `took` after
    /// the request's (the answer of the session, or the proxy's 502 or 504 in its stead).
    func answered(_ head: HTTPRequestHead, status: Int, took: Duration)
}

extension ProxyResolver {
    public func cachedDecision(for head: HTTPRequestHead, origin: String?) -> ProxyDecision? { cachedDecision(for: head) }
    public func decision(for head: HTTPRequestHead, origin: String?) async -> ProxyDecision { await decision(for: head) }
    public func tunnelOpened(_ channel: any Channel, request head: HTTPRequestHead) -> (@Sendable () -> Void)? { nil }
    public func answered(_ head: HTTPRequestHead, status: Int, took: Duration) {}
}

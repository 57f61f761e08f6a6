public import NIOCore
public import NIOHTTP1
public import NIOSSL

/// Where a proxied request is sent: a session's Unix socket on this node, or another node
/// (with the name its certificate must carry, sent as SNI, and how long connecting may take:
/// `timeout` in load-balancer, as for every peer call).
public enum Upstream: Sendable, Equatable, CustomStringConvertible {
    case unix(path: String)
    case tcp(host: String, port: Int, name: String? = nil, connectTimeout: TimeAmount = .seconds(10))

    public var description: String {
        switch self {
        case .unix(let path): "unix:\(path)"
        case .tcp(let host, let port, let name, _): name.map { "\($0) (\(host)):\(port)" } ?? "\(host):\(port)"
        }
    }
}

/// Where a proxied request goes, or the answer to give instead.
public enum ProxyDecision: Sendable {
    /// Forward to `upstream` (TLS when `tls` is set), adding `headers`.
    case forward(Upstream, tls: NIOSSLContext?, headers: [(String, String)], onFailure: @Sendable () -> Void)
    case respond(HTTPResponse)
}

/// Decides where `/s/<id>/…` requests go.
public protocol ProxyResolver: Sendable {
    /// An answer from memory, without waiting, or nil when the slow path must run.
    func cachedDecision(for head: HTTPRequestHead) -> ProxyDecision?
    /// The full decision: may read the registry, and start or move the session.
    func decision(for head: HTTPRequestHead) async -> ProxyDecision
    /// The request `head` became a WebSocket tunnel on `channel` (the client's).
    /// - Returns: what to call when the client sends through the tunnel (at most once a
    ///   second), or nil.
    func tunnelOpened(_ channel: any Channel, request head: HTTPRequestHead) -> (@Sendable () -> Void)?
    /// The proxied request `head` was answered with `status`, the answer's head `took` after
    /// the request's (the answer of the session, or the proxy's 502 or 504 in its stead).
    func answered(_ head: HTTPRequestHead, status: Int, took: Duration)
}

extension ProxyResolver {
    public func tunnelOpened(_ channel: any Channel, request head: HTTPRequestHead) -> (@Sendable () -> Void)? { nil }
    public func answered(_ head: HTTPRequestHead, status: Int, took: Duration) {}
}

public import NIOHTTP1
public import NIOSSL

/// Where a proxied request goes, or the answer to give instead.
public enum ProxyDecision: Sendable {
    /// Forward to `host:port` (TLS when `tls` is set), adding `headers`.
    case forward(host: String, port: Int, tls: NIOSSLContext?, headers: [(String, String)], onFailure: @Sendable () -> Void)
    case respond(HTTPResponse)
}

/// Decides where `/s/<id>/…` requests go.
public protocol ProxyResolver: Sendable {
    /// An answer from memory, without waiting, or nil when the slow path must run.
    func cachedDecision(for head: HTTPRequestHead) -> ProxyDecision?
    /// The full decision: may read the registry, and start or move the session.
    func decision(for head: HTTPRequestHead) async -> ProxyDecision
}

import DroverCluster
public import Logging
public import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
public import NIOSSL
public import ServiceLifecycle

/// The node's HTTP server: a ``Service`` that binds `www-address:www-port` and serves until
/// graceful shutdown.
public struct HTTPServer: Service {
    public let host: String
    public let port: Int
    let responder: any HTTPResponder
    let proxy: (any ProxyResolver)?
    let logger: Logger
    let tls: NIOSSLContext?
    private let channel: any Channel
    private let connections: OpenConnections
    /// How long open connections get to finish when the node stops, before they are closed.
    static let quiesceBound = TimeAmount.seconds(10)

    /// Binds `host:port` at once, so a taken port fails start-up before the node joins the
    /// cluster; serving starts with ``run()``.
    /// - Parameters:
    ///   - host: `www-address`.
    ///   - port: `www-port`.
    ///   - tls: serve https with this context (`ssl-enabled=1`).
    ///   - proxy: where `/s/<id>/…` requests go; nil serves none.
    ///   - sessionResponseTimeout: seconds a session may take to start answering (504 after).
    public init(host: String, port: Int, responder: any HTTPResponder, proxy: (any ProxyResolver)? = nil, tls: NIOSSLContext? = nil,
                sessionResponseTimeout: Int = 60, logger: Logger) async throws {
        self.host = host
        self.port = port
        self.responder = responder
        self.proxy = proxy
        self.logger = logger
        self.tls = tls
        let connections = OpenConnections()
        self.connections = connections
        channel = try await Self.bind(host: host, port: port, responder: responder, proxy: proxy, tls: tls,
                                      responseTimeout: .seconds(Int64(sessionResponseTimeout)), connections: connections, logger: logger)
    }

    /// The address the server listens on.
    public var localAddress: SocketAddress? { channel.localAddress }

    /// A server context from `ssl-certificate` and `ssl-certificate-key` (PEM).
    public static func tlsContext(certificate: String, key: String) throws -> NIOSSLContext {
        do {
            return try NIOSSLContext(configuration: CertificateSelfCheck.serverConfiguration(certificate: certificate, key: key))
        } catch {
            throw HTTPServerError.badCertificate(certificate: certificate, key: key, reason: "\(error)")
        }
    }

    static func bind(host: String, port: Int, responder: any HTTPResponder, proxy: (any ProxyResolver)?, tls: NIOSSLContext?,
                     responseTimeout: TimeAmount, connections: OpenConnections, logger: Logger) async throws -> any Channel {
        do {
            return try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.backlog, value: 512)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                // Nothing is accepted before run(): a node still joining (or freeing the rows of
                // its previous run) must not answer yet; clients wait in the backlog meanwhile.
                .serverChannelOption(.autoRead, value: false)
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .childChannelInitializer { channel in
                    connections.add(channel)
                    return channel.eventLoop.makeCompletedFuture {
                        let pipeline = channel.pipeline.syncOperations
                        if let tls { try pipeline.addHandler(NIOSSLServerHandler(context: tls)) }
                        try pipeline.addHandler(HTTPResponseEncoder(), name: PipelineHandlerName.encoder)
                        try pipeline.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)), name: PipelineHandlerName.decoder)
                        try pipeline.addHandler(HTTPServerProtocolErrorHandler(), name: PipelineHandlerName.protocolErrors)
                        try pipeline.addHandler(RoutingServerHandler(responder: responder, proxy: proxy, isTLS: tls != nil,
                                                                         responseTimeout: responseTimeout, logger: logger), name: PipelineHandlerName.router)
                    }
                }
                .bind(host: host, port: port).get()
        } catch {
            throw HTTPServerError.cannotBind(host: host, port: port, reason: "\(error)")
        }
    }

    public func run() async throws {
        logger.info("listening", metadata: ["address": "\(host):\(port)", "tls": "\(tls != nil)"])
        try await channel.setOption(ChannelOptions.autoRead, value: true).get()
        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
        // Nothing new is accepted; what is open finishes its exchange and closes.
        await connections.quiesce(within: Self.quiesceBound)
    }
}

/// The server's open client connections, so a stopping node can let each finish its
/// exchange (``ChannelShouldQuiesceEvent``) and close what is left at a deadline.
final class OpenConnections: Sendable {
    private let open = Mutex([ObjectIdentifier: any Channel]())

    func add(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        open.withLock { $0[id] = channel }
        channel.closeFuture.whenComplete { _ in self.open.withLock { _ = $0.removeValue(forKey: id) } }
    }

    var count: Int { open.withLock { $0.count } }

    /// Asks every connection to finish and close; closes what is still open after `bound`.
    func quiesce(within bound: TimeAmount) async {
        for channel in open.withLock({ Array($0.values) }) {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        let deadline = NIODeadline.now() + bound
        while count > 0, NIODeadline.now() < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        for channel in open.withLock({ Array($0.values) }) { channel.close(promise: nil) }
    }
}

/// The server could not start.
public enum HTTPServerError: Error, CustomStringConvertible {
    case cannotBind(host: String, port: Int, reason: String)
    case badCertificate(certificate: String, key: String, reason: String)
    /// The peers would refuse the node's certificate (``CertificateSelfCheck``).
    case certificateRefused(certificate: String, name: String, reason: String)

    public var description: String {
        switch self {
        case .certificateRefused(let certificate, let name, let reason):
            "the certificate in ssl-certificate \(certificate) does not match this node's name \(name) or is not signed by a trusted CA, "
                + "so the other nodes (verify-ssl-certs=1) would refuse it: \(reason); use a certificate for \(name) signed by a CA in the "
                + "system's trust store or in ssl-ca-file (load-balancer)"
        case .badCertificate(let certificate, let key, let reason):
            "cannot use ssl-certificate \(certificate) with ssl-certificate-key \(key) (\(reason)); both must be readable PEM files that belong together"
        case .cannotBind(let host, let port, let reason):
            "cannot listen on \(host):\(port) (\(reason)); free the port or change www-address/www-port in rserver.conf"
        }
    }
}

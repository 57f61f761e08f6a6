public import DroverCluster
public import DroverKernel
import Prometheus
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
    ///   - limits: how long a client may take over a head or stay idle, and how many may be open.
    ///   - metrics: where open client connections are counted.
    public init(host: String, port: Int, responder: any HTTPResponder, proxy: (any ProxyResolver)? = nil, tls: NIOSSLContext? = nil,
                sessionResponseTimeout: Int = 60, limits: ClientLimits = ClientLimits(), metrics: NodeMetrics? = nil,
                logger: Logger) async throws {
        self.host = host
        self.port = port
        self.responder = responder
        self.proxy = proxy
        self.logger = logger
        self.tls = tls
        let connections = OpenConnections(counted: metrics?.clientConnections)
        self.connections = connections
        channel = try await Self.bind(host: host, port: port, responder: responder, proxy: proxy, tls: tls,
                                      responseTimeout: .seconds(Int64(sessionResponseTimeout)), limits: limits, connections: connections,
                                      logger: logger)
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

    /// The node's server context: `ssl-certificate`, and with `www-session-domain` the
    /// certificate for the sessions' origins, chosen by the name the browser asks for (SNI):
    /// `ssl-session-certificate` when set. Either way the certificate sessions get must be valid
    /// for `<id>.<domain>` (a wildcard), or the node does not start.
    public static func tlsContext(_ server: ServerConfiguration) throws -> NIOSSLContext {
        let (certificate, key) = (server.sslCertificate ?? "", server.sslCertificateKey ?? "")
        guard let domain = server.sessionDomain else { return try tlsContext(certificate: certificate, key: key) }
        let sessionCertificate = server.sslSessionCertificate ?? certificate
        let probe = String(repeating: "0", count: 32) + "." + domain
        guard Crypto.certificate(atPath: sessionCertificate, matchesHost: probe) == true else {
            throw HTTPServerError.sessionCertificateMismatch(certificate: sessionCertificate, domain: domain)
        }
        guard let sessionKey = server.sslSessionCertificateKey else { return try tlsContext(certificate: certificate, key: key) }
        do {
            var configuration = try CertificateSelfCheck.serverConfiguration(certificate: certificate, key: key)
            let chain = try NIOSSLCertificate.fromPEMFile(sessionCertificate).map { NIOSSLCertificateSource.certificate($0) }
            let privateKey = NIOSSLPrivateKeySource.privateKey(try NIOSSLPrivateKey(file: sessionKey, format: .pem))
            // Checked as the main context is: the pair must belong together.
            _ = try NIOSSLContext(configuration: CertificateSelfCheck.serverConfiguration(certificate: sessionCertificate, key: sessionKey))
            let suffix = "." + domain
            configuration.sslContextCallback = { hello, promise in
                guard let name = hello.serverHostname?.lowercased(), name.hasSuffix(suffix) else { return promise.succeed(.noChanges) }
                var sessions = NIOSSLContextConfigurationOverride()
                sessions.certificateChain = chain
                sessions.privateKey = privateKey
                promise.succeed(sessions)
            }
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw HTTPServerError.badCertificate(certificate: "\(certificate) or \(sessionCertificate)", key: "\(key) or \(sessionKey)", reason: "\(error)")
        }
    }

    static func bind(host: String, port: Int, responder: any HTTPResponder, proxy: (any ProxyResolver)?, tls: NIOSSLContext?,
                     responseTimeout: TimeAmount, limits: ClientLimits, connections: OpenConnections,
                     logger: Logger) async throws -> any Channel {
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
                    // Past www-max-connections a client is told to come back (in plain text
                    // only: a TLS client would not read it) and closed.
                    guard connections.add(channel, limits: limits) else {
                        logger.debug("connection refused: www-max-connections or www-max-connections-per-address reached",
                                     metadata: ["limit": "\(limits.maxConnections)", "per-address": "\(limits.maxConnectionsPerAddress)"])
                        return channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(ConnectionRefusal(plainText: tls == nil))
                        }
                    }
                    return channel.eventLoop.makeCompletedFuture {
                        let pipeline = channel.pipeline.syncOperations
                        // A TCP load balancer's PROXY header comes before anything, TLS included.
                        let origin = ConnectionOrigin()
                        if limits.proxyProtocol, let peer = channel.remoteAddress?.ipAddress, limits.trustedProxies.contains(peer) {
                            try pipeline.addHandler(ProxyProtocolHandler(origin: origin))
                        }
                        if let tls { try pipeline.addHandler(NIOSSLServerHandler(context: tls)) }
                        let clientDeadlines = ClientDeadlines(limits: limits)
                        // No response encoder: responses leave the router as bytes.
                        try pipeline.addHandler(ClientRequestFramingHandler(deadlines: clientDeadlines), name: PipelineHandlerName.decoder)
                        try pipeline.addHandler(RoutingServerHandler(responder: responder, proxy: proxy, isTLS: tls != nil,
                                                                         responseTimeout: responseTimeout, logger: logger,
                                                                         clientDeadlines: clientDeadlines, trustedProxies: limits.trustedProxies,
                                                                         origin: origin, forwardedClients: limits.forwardedClients,
                                                                         forwardedLimit: limits.maxConnectionsPerAddress),
                                                name: PipelineHandlerName.router)
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
    /// Open connections by the client's address (IPv6 by its /64, which one host commonly has).
    private let perAddress = Mutex((total: 0, counts: [String: Int]()))
    /// The metrics' gauge of open client connections.
    private let gauge: Gauge?

    init(counted gauge: Gauge? = nil) {
        self.gauge = gauge
    }

    /// Counts `channel` as open until it closes, unless `limit` connections are open already.
    /// - Returns: whether it was added.
    func add(_ channel: any Channel, limit: Int = .max) -> Bool {
        add(channel, limits: ClientLimits(maxConnections: limit, maxConnectionsPerAddress: .max))
    }

    /// Counts `channel` as open until it closes, unless its address has
    /// `maxConnectionsPerAddress` open, or `maxConnections` are open already. A privileged
    /// source (the cluster's nodes, this machine) is held to neither, only to a reserve beyond
    /// `maxConnections`: clients cannot starve the nodes' calls or the CLI.
    func add(_ channel: any Channel, limits: ClientLimits) -> Bool {
        let id = ObjectIdentifier(channel)
        let address = channel.remoteAddress?.ipAddress ?? ""
        let privileged = !address.isEmpty && limits.isPrivileged(address)
        let key = Self.addressKey(address)
        // A trusted proxy's connections carry many clients: not held to one address's share.
        let counted = !privileged && !limits.trustedProxies.contains(address)
        let added = open.withLock { open in
            // Clients share `maxConnections`; privileged sources may go past it by the reserve,
            // and what they hold is not the clients'.
            guard open.count < limits.maxConnections + ClientLimits.reserve else { return false }
            if counted {
                let fits = perAddress.withLock { clients in
                    guard clients.total < limits.maxConnections, clients.counts[key, default: 0] < limits.maxConnectionsPerAddress else { return false }
                    clients.counts[key, default: 0] += 1
                    clients.total += 1
                    return true
                }
                guard fits else { return false }
            } else if open.count >= limits.maxConnections + ClientLimits.reserve {
                return false
            }
            open[id] = channel
            return true
        }
        if added {
            gauge?.increment()
            channel.closeFuture.whenComplete { _ in
                self.open.withLock { _ = $0.removeValue(forKey: id) }
                if counted {
                    self.perAddress.withLock { clients in
                        let left = clients.counts[key, default: 1] - 1
                        clients.counts[key] = left > 0 ? left : nil
                        clients.total -= 1
                    }
                }
                self.gauge?.decrement()
            }
        }
        return added
    }

    /// The key an address's connections are counted under: an IPv4 address as it is, an IPv6
    /// address by its first 64 bits.
    static func addressKey(_ address: String) -> String {
        guard address.contains(":") else { return address }
        var bytes = in6_addr()
        guard inet_pton(AF_INET6, address, &bytes) == 1 else { return address }
        return withUnsafeBytes(of: bytes) { Array($0.prefix(8)) }.map { String(format: "%02x", $0) }.joined() + "::/64"
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

/// Answers a connection past `www-max-connections` once it is active: 503 with `Retry-After`
/// (in plain text only: a TLS client would not read it), then closes it.
final class ConnectionRefusal: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    static let answer = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Type: text/plain\r\n"
        + "Content-Length: 52\r\n\r\nthis node has www-max-connections connections open\r\n"
    private let plainText: Bool

    init(plainText: Bool) {
        self.plainText = plainText
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { refuse(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        refuse(context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    private func refuse(_ context: ChannelHandlerContext) {
        guard plainText else { return context.close(promise: nil) }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: Self.answer))).whenComplete { _ in channel.close(promise: nil) }
    }
}

/// The server could not start.
public enum HTTPServerError: Error, CustomStringConvertible {
    case cannotBind(host: String, port: Int, reason: String)
    case badCertificate(certificate: String, key: String, reason: String)
    /// The peers would refuse the node's certificate (``CertificateSelfCheck``).
    case certificateRefused(certificate: String, name: String, reason: String)
    /// The certificate sessions' origins get does not name them.
    case sessionCertificateMismatch(certificate: String, domain: String)

    public var description: String {
        switch self {
        case .sessionCertificateMismatch(let certificate, let domain):
            "the certificate \(certificate) is not valid for the sessions' origins (<id>.\(domain), www-session-domain), so browsers would "
                + "refuse every session; use a wildcard certificate for *.\(domain) (in ssl-session-certificate, or in ssl-certificate "
                + "beside the main name), readable as PEM"
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

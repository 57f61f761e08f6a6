public import DroverKernel
import NIOCore
import NIOEmbedded
public import NIOSSL
import NIOTLS

/// Whether this node's certificate satisfies its peers, checked at start: a TLS handshake in
/// memory between the node's server context and the client context its peers use, for the
/// name they connect by (`www-host-name`) or, for a node known only by its address, that
/// address. The same verification as a real peer's, without a socket, before the node joins.
public enum CertificateSelfCheck {
    /// - Returns: nil when a peer would accept the certificate, else why it would not.
    public static func problem(server: NIOSSLContext, client: NIOSSLContext, name: String?, address: String, port: Int) -> String? {
        let serverSide = EmbeddedChannel()
        let clientSide = EmbeddedChannel()
        let outcome = HandshakeOutcome()
        defer {
            // Closing waits for TLS's close_notify: not waited for (an embedded loop's future
            // completes only as the test drives it).
            clientSide.close(promise: nil)
            serverSide.close(promise: nil)
        }
        do {
            try serverSide.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: server))
            try clientSide.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: client, serverHostname: name))
            try clientSide.pipeline.syncOperations.addHandler(outcome)
            // Embedded channels connect at once (never wait on an embedded loop's future).
            serverSide.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 1), promise: nil)
            clientSide.connect(to: try SocketAddress(ipAddress: address, port: port), promise: nil)
            // The two sides' bytes go back and forth until the handshake ends or nothing moves.
            for _ in 0..<16 where outcome.finished == nil {
                var moved = false
                while let bytes = try clientSide.readOutbound(as: ByteBuffer.self) {
                    moved = true
                    try serverSide.writeInbound(bytes)
                }
                while let bytes = try serverSide.readOutbound(as: ByteBuffer.self) {
                    moved = true
                    try clientSide.writeInbound(bytes)
                }
                if !moved { break }
            }
        } catch {
            return outcome.finished.flatMap { $0 } ?? "\(error)"
        }
        switch outcome.finished {
        case .some(nil): return nil
        case .some(let reason?): return reason
        case nil: return "the TLS handshake did not finish"
        }
    }

    /// A node's server TLS configuration from `ssl-certificate` and `ssl-certificate-key` (PEM):
    /// TLS 1.2 and later only (1.0 and 1.1 are deprecated, RFC 8996).
    public static func serverConfiguration(certificate: String, key: String) throws -> TLSConfiguration {
        let chain = try NIOSSLCertificate.fromPEMFile(certificate).map { NIOSSLCertificateSource.certificate($0) }
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain,
                                                                      privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
        configuration.minimumTLSVersion = .tlsv12
        return configuration
    }

    /// The check for a node reached at `address`, with its server context and the client
    /// context its peers use.
    public static func problem(server: NIOSSLContext, client: NIOSSLContext, address: NodeAddress) -> String? {
        problem(server: server, client: client, name: NodeClient.tlsName(forHost: address.host), address: address.ipv4 ?? "127.0.0.1",
                port: address.port)
    }

    /// What the peers check a node's certificate against: its name, or its address.
    public static func checkedName(_ address: NodeAddress) -> String {
        NodeClient.tlsName(forHost: address.host) ?? address.ipv4 ?? address.host
    }

    /// The check for a node's configuration: nil when its certificate would be accepted (or
    /// the cluster does not verify certificates), else why not.
    public static func problem(_ configuration: DroverConfiguration, address: NodeAddress) throws -> String? {
        let server = configuration.server
        guard server.sslEnabled, let certificate = server.sslCertificate, let key = server.sslCertificateKey,
              let loadBalancer = configuration.loadBalancer, loadBalancer.verifySSLCerts,
              let client = try NodeClient.tlsContext(for: .https, caFile: loadBalancer.sslCAFile) else { return nil }
        return problem(server: try NIOSSLContext(configuration: serverConfiguration(certificate: certificate, key: key)), client: client,
                       address: address)
    }

    /// Records how the client's handshake ended: nil inside for success, else the reason.
    private final class HandshakeOutcome: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        var finished: String??

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case .handshakeCompleted = event as? TLSUserEvent, finished == nil { finished = .some(nil) }
            context.fireUserInboundEventTriggered(event)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            if finished == nil { finished = .some("\(error)") }
        }
    }
}

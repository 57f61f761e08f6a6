public import DroverCluster
import DroverKernel
public import Logging

extension HTTPServer {
    /// A node's server, as `rserver.conf` describes it: its own endpoints, the user API with
    /// PAM sign-in (or `auth-none`), the session proxy, https when `ssl-enabled=1`, and
    /// `session-response-timeout`. Binds `www-address:www-port` at once.
    public static func node(membership: ClusterMembership, sessions: SessionManager, logger: Logger) async throws -> HTTPServer {
        let runtime = membership.runtime
        let server = runtime.configuration.server
        let authentication = Authentication(key: runtime.key, authNone: server.authNone, pamService: server.authPAMService,
                                            minimumUserID: server.authMinimumUserID, secure: server.sslEnabled,
                                            hostNames: [runtime.loadBalancer.wwwHostName, server.wwwAddress].compactMap { $0 },
                                            revocations: runtime.revocations, clock: runtime.clock, origins: SessionOrigins(server),
                                            secureCookies: server.secureCookies)
        let tls = try server.sslEnabled ? tlsContext(server) : nil
        let peerTLS = try NodeClient.tlsContext(for: runtime.clusterProtocol, caFile: runtime.loadBalancer.sslCAFile)
        // With verify-ssl-certs=1 the peers check this node's certificate against the name
        // they connect by: a certificate they would refuse stops the node here, saying why.
        if let tls, let peerTLS, runtime.clusterProtocol == .https,
           let problem = CertificateSelfCheck.problem(server: tls, client: peerTLS, address: runtime.address) {
            throw HTTPServerError.certificateRefused(certificate: server.sslCertificate!, name: CertificateSelfCheck.checkedName(runtime.address),
                                                     reason: problem)
        }
        let proxy = SessionProxyResolver(sessions: sessions, authentication: authentication, peerTLS: peerTLS,
                                         allowedOrigins: server.allowedOrigins)
        var limits = ClientLimits(headerTimeout: .seconds(Int64(server.headerTimeout)),
                                  keepAliveTimeout: .seconds(Int64(server.keepAliveTimeout)),
                                  maxConnections: server.maxConnections,
                                  bodyTimeout: .seconds(Int64(server.bodyTimeout)),
                                  maxConnectionsPerAddress: server.maxConnectionsPerAddress,
                                  isPrivileged: { [runtime] address in runtime.isPrivilegedSource(address) })
        limits.trustedProxies = TrustedProxies(ranges: server.trustedProxies)
        limits.proxyProtocol = server.proxyProtocol
        return try await HTTPServer(host: server.wwwAddress, port: server.wwwPort,
                                    responder: NodeResponder(membership: membership, sessions: sessions, authentication: authentication),
                                    proxy: proxy, tls: tls, sessionResponseTimeout: server.sessionResponseTimeout,
                                    limits: limits,
                                    metrics: runtime.metrics, logger: logger)
    }
}

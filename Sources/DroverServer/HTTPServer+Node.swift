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
                                            secure: server.sslEnabled)
        let tls = try server.sslEnabled ? tlsContext(certificate: server.sslCertificate!, key: server.sslCertificateKey!) : nil
        let proxy = SessionProxyResolver(sessions: sessions, authentication: authentication,
                                         peerTLS: try NodeClient.tlsContext(for: runtime.clusterProtocol))
        return try await HTTPServer(host: server.wwwAddress, port: server.wwwPort,
                                    responder: NodeResponder(membership: membership, sessions: sessions, authentication: authentication),
                                    proxy: proxy, tls: tls, sessionResponseTimeout: server.sessionResponseTimeout, logger: logger)
    }
}

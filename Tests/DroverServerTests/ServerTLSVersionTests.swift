import DroverCluster
@testable import DroverServer
import DroverTesting
import Foundation
import NIOSSL
import Testing

/// The node's https server speaks TLS 1.2 and later only (TLS 1.0 and 1.1 are deprecated,
/// RFC 8996): a handshake in memory with the server's own context.
@Suite struct ServerTLSVersionTests {
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl")))
    func aClientOfTLS11IsRefusedAndOneOfTLS12Served() async throws {
        let dir = TemporaryDirectory(prefix: "drover-tls-version")
        let made = try await Executable.run("/usr/bin/openssl", [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", dir.url("key.pem"), "-out", dir.url("cert.pem")])
        #expect(made.status == 0, "\(made.stderr)")
        let server = try HTTPServer.tlsContext(certificate: dir.url("cert.pem"), key: dir.url("key.pem"))
        func client(_ version: TLSVersion) throws -> NIOSSLContext {
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.certificateVerification = .none
            configuration.minimumTLSVersion = .tlsv1
            configuration.maximumTLSVersion = version
            return try NIOSSLContext(configuration: configuration)
        }
        #expect(CertificateSelfCheck.problem(server: server, client: try client(.tlsv12), name: nil, address: "127.0.0.1", port: 443) == nil)
        let old = CertificateSelfCheck.problem(server: server, client: try client(.tlsv11), name: nil, address: "127.0.0.1", port: 443)
        #expect(old != nil, "a TLS 1.1 client was served")
    }
}

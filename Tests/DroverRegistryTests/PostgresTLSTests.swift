import DroverKernel
import DroverTesting
import Foundation
import Testing

/// TLS to PostgreSQL (`sslmode`, `sslrootcert`), against the private server scripts/test.sh
/// starts with a certificate for 127.0.0.1 signed by a CA of its own.
@Suite struct PostgresTLSTests {
    /// A cluster member's configuration directory whose `database.conf` is `database`.
    func member(_ database: String) throws -> ConfigDirectory {
        let dir = try ConfigDirectory()
        try dir.write("load-balancer", "")
        try dir.write("database.conf", database)
        return dir
    }

    func drover(_ arguments: [String], _ dir: ConfigDirectory) async throws -> Executable.Result {
        try await Executable.run("drover", arguments + ["--config-dir", dir.path], timeout: 60)
    }

    @Test(.enabled(if: PostgresTestServer.shouldRun))
    func theRegistryConnectionIsEncryptedAndVerifiedWhenDatabaseConfAsks() async throws {
        let server = try PostgresTestServer.required()
        let ca = try #require(server.certificateAuthority, "scripts/test.sh starts PostgreSQL with TLS and sets DROVER_TEST_PG_CA")
        let name = try await server.createDatabase()

        // The separate keys: verified against the CA, encrypted, and the registry works.
        let keys = try member(server.databaseConf(name, extra: "sslmode=verify-full\nsslrootcert=\(ca)\n"))
        let verified = try await drover(["verify"], keys)
        #expect(verified.status == 0, "\(verified.stderr)")
        #expect(verified.stdout.contains("connection encrypted (TLSv1."), "\(verified.stdout)")
        #expect(try await drover(["list-nodes"], keys).status == 0)

        // The same inside connection-uri.
        let uri = try member("""
            provider=postgresql
            connection-uri=postgresql://\(server.user)@\(server.host):\(server.port)/\(name)?sslmode=verify-full&sslrootcert=\(ca)
            connection-timeout-seconds=5
            """)
        let viaURI = try await drover(["verify"], uri)
        #expect(viaURI.stdout.contains("connection encrypted (TLSv1."), "\(viaURI.stdout)\(viaURI.stderr)")

        // Without TLS, verify says so.
        let plain = try member(server.databaseConf(name, extra: "sslmode=disable\n"))
        let unencrypted = try await drover(["verify"], plain)
        #expect(unencrypted.stdout.contains("connection not encrypted"), "\(unencrypted.stdout)")

        // A server whose certificate the given CA did not sign is refused, with the reason.
        let other = TemporaryDirectory(prefix: "drover-other-ca")
        let made = try await Executable.run("/usr/bin/openssl", [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
            "-subj", "/CN=Some other CA", "-keyout", other.url("ca.key"), "-out", other.url("ca.pem")])
        #expect(made.status == 0, "\(made.stderr)")
        let stranger = try member(server.databaseConf(name, extra: "sslmode=verify-full\nsslrootcert=\(other.url("ca.pem"))\n"))
        let refused = try await drover(["list-nodes"], stranger)
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("certificate verify failed"), "\(refused.stderr)")
        #expect(refused.stderr.split(separator: "\n").count == 1, "one line: \(refused.stderr)")
    }

    @Test func badTLSKeysAreRefusedWithTheFix() async throws {
        let mode = try member("provider=postgresql\nsslmode=verify-everything\n")
        let badMode = try await drover(["verify"], mode)
        #expect(badMode.status == 2)
        #expect((badMode.stdout + badMode.stderr).contains("database.conf:2: sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full"),
                "\(badMode.stdout)")
        let root = try member("provider=postgresql\nsslmode=verify-full\nsslrootcert=/nonexistent/ca.pem\n")
        let badRoot = try await drover(["verify"], root)
        #expect(badRoot.status == 2)
        #expect((badRoot.stdout + badRoot.stderr).contains("sslrootcert /nonexistent/ca.pem cannot be read"), "\(badRoot.stdout)")
    }
}

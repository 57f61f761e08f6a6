import DroverKernel
import DroverTesting
import Foundation
import Testing

@Suite struct DroverCommandTests {
    @Test func helpListsEveryCommandOfTheDesign() async throws {
        let result = try await Executable.run("drover", ["--help"])
        #expect(result.status == 0)
        for command in ["list-nodes", "delete-node", "reset-cluster", "offline", "online", "reload", "status",
                        "active-sessions", "suspend-all", "locktester", "generate-key", "encrypt-password",
                        "migrate-db", "verify", "place"] {
            #expect(result.stdout.contains("  \(command) "), "help does not list \(command)")
        }
    }

    /// The release comes from the repository's VERSION file, which the build embeds; both
    /// programs print it with the protocol and schema versions that decide compatibility.
    @Test func bothProgramsPrintTheVersionTheBuildEmbedded() async throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let release = try String(contentsOf: root.appending(path: "VERSION"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(release.split(separator: ".").count == 3, "VERSION holds \(release)")
        for program in ["droverd", "drover"] {
            let result = try await Executable.run(program, ["--version"])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout == "Drover \(release) (cluster protocol 1, registry schema 10)\n", "\(program): \(result.stdout)")
        }
    }

    @Test func verifyPrintsOneLinePerCheck() async throws {
        let config = try ConfigDirectory()
        try config.write("load-balancer", "[config]\ndiagnostics=stderr\n")
        let result = try await Executable.run("drover", ["verify", "--config-dir", config.path])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        let lines = result.stdout.split(separator: "\n")
        #expect(lines.first == "ok    configuration directory \(config.path)")
        #expect(lines.contains("ok    balancer strategy 'sessions'"))
        #expect(lines.contains("ok    registry store 'sqlite'"))
        #expect(lines.contains("ok    diagnostics sink 'stderr'"))
        #expect(lines.contains { $0.hasPrefix("warn  ") && $0.contains("legacy form") })
        #expect(lines.contains { $0.hasPrefix("ok    secure cookie key \(config.path)/secure-cookie-key") })
        // PAM sign-in with sessions on Drover's origin (issue 37, item 7).
        #expect(lines.contains { $0.hasPrefix("warn  session origins: www-session-domain is unset") }, "\(result.stdout)")
    }

    /// With session origins, `drover verify` names them, and checks that the certificate the
    /// sessions get names `<id>.<domain>`; droverd does not start with one that does not.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl")))
    func verifyAndTheNodeCheckTheSessionsCertificate() async throws {
        let pki = TemporaryDirectory(prefix: "drover-verify-pki")
        for (name, subject) in [("main", "drover.test"), ("sessions", "*.sessions.test")] {
            let made = try await Executable.run("/usr/bin/openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                                                                   "-days", "2", "-subj", "/CN=\(subject)", "-addext", "subjectAltName=DNS:\(subject)",
                                                                   "-keyout", pki.url("\(name).key"), "-out", pki.url("\(name).pem")])
            #expect(made.status == 0, "\(made.stderr)")
        }
        let tls = "ssl-enabled=1\nssl-certificate=\(pki.url("main.pem"))\nssl-certificate-key=\(pki.url("main.key"))\n"
            + "www-session-domain=sessions.test\nwww-main-host=drover.test\n"
        let good = try ConfigDirectory(rserver: tls + "ssl-session-certificate=\(pki.url("sessions.pem"))\nssl-session-certificate-key=\(pki.url("sessions.key"))\n")
        let verified = try await Executable.run("drover", ["verify", "--config-dir", good.path])
        #expect(verified.status == 0, "\(verified.stdout)\(verified.stderr)")
        #expect(verified.stdout.contains("ok    session origins: each session at <id>.sessions.test, Drover's own pages at drover.test"))
        #expect(verified.stdout.contains("ok    certificate \(pki.url("sessions.pem")) is valid for the sessions' origins (*.sessions.test)"))
        #expect(!verified.stdout.contains("www-session-domain is unset"))
        // The node picks the certificate by the name the client asks for (SNI). (Its peers would
        // check the main certificate against 127.0.0.1: not here.)
        try good.write("load-balancer", "[config]\nverify-ssl-certs=0\n")
        let node = try RunningProcess(Executable.path("droverd"), ["--config-dir", good.path])
        defer { node.signal(SIGKILL) }
        try await node.waitUntil(timeout: 60, "droverd listens") { node.stderr.contains("listening") }
        for (name, subject) in [("drover.test", "CN=drover.test"), ("0123456789abcdef0123456789abcdef.sessions.test", "CN=*.sessions.test")] {
            let served = try await Executable.run("/bin/sh", ["-c", "openssl s_client -connect 127.0.0.1:\(good.port) -servername \(name) </dev/null 2>/dev/null"
                                                              + " | openssl x509 -noout -subject"])
            #expect(served.stdout.replacingOccurrences(of: " ", with: "").contains(subject), "asked for \(name): \(served.stdout) \(served.stderr)")
        }
        // The main certificate alone does not name the sessions.
        let bad = try ConfigDirectory(rserver: tls)
        let refused = try await Executable.run("drover", ["verify", "--config-dir", bad.path])
        #expect(refused.status == 2 && refused.stdout.contains("FAIL  certificate \(pki.url("main.pem")) does not name the sessions' origins"),
                "\(refused.stdout)")
        let droverd = try await Executable.run("droverd", ["--config-dir", bad.path], timeout: 60)
        #expect(droverd.status != 0 && droverd.stderr.contains("is not valid for the sessions' origins (<id>.sessions.test, www-session-domain)"),
                "\(droverd.stderr.suffix(800))")
    }

    @Test func verifyFailsWithStatusTwoOnBadConfigOrKey() async throws {
        let config = try ConfigDirectory()
        try config.write("database.conf", "pool-size=lots\n")
        let bad = try await Executable.run("drover", ["--config-dir", config.path, "verify"])
        #expect(bad.status == 2)
        #expect(bad.stdout.contains("FAIL  configuration: \(config.path)/database.conf:1: 'pool-size' must be a whole number, found 'lots'"))

        // A cluster node needs the cluster's key copied to it.
        let noKey = try ConfigDirectory(key: nil)
        try noKey.write("load-balancer", "balancer=sessions\n")
        let missing = try await Executable.run("drover", ["verify"], environment: ["DROVER_CONFIG_DIR": noKey.path])
        #expect(missing.status == 2)
        #expect(missing.stdout.contains("FAIL  secure cookie key: \(noKey.path)/secure-cookie-key: no secure cookie key"))
    }

    /// The embedded default before the first start: the single node generates its key then,
    /// so a missing key is what will happen, not a failure.
    @Test func verifyOnASingleNodeBeforeItsFirstStartSaysTheKeyWillBeGenerated() async throws {
        let fresh = try ConfigDirectory(key: nil)
        let result = try await Executable.run("drover", ["verify", "--config-dir", fresh.path])
        #expect(result.status == 0, "\(result.stdout)")
        #expect(result.stdout.contains("ok    secure cookie key \(fresh.path)/secure-cookie-key (absent: droverd generates it at its first start, mode 0600)"))
        #expect(!result.stdout.contains("FAIL"))
    }

    @Test func verifyChecksThatAnEncryptedPasswordDecrypts() async throws {
        let config = try ConfigDirectory()
        let other = SecureCookieKey(bytes: Array("not-this-clusters-key-000".utf8))
        try config.write("database.conf", "provider=postgresql\npassword=\(DatabasePassword.encrypt("pw", key: other))\n")
        let bad = try await Executable.run("drover", ["verify", "--config-dir", config.path])
        #expect(bad.status == 2)
        #expect(bad.stdout.contains("FAIL  database password: \(config.path)/database.conf:2: the password was encrypted under a different secure cookie key"))
        let encrypted = try await Executable.run("drover", ["encrypt-password", "--config-dir", config.path], stdin: "pw\n").stdout
        try config.write("database.conf", "provider=postgresql\npassword=\(encrypted)")
        let good = try await Executable.run("drover", ["verify", "--config-dir", config.path])
        #expect(good.status == 0, "\(good.stdout)")
        #expect(good.stdout.contains("ok    database password decrypts with this key"))
    }

    @Test func generateKeyWritesMode0600AndRefusesToOverwriteWithoutForce() async throws {
        let dir = TemporaryDirectory()
        let path = dir.url("key")
        let first = try await Executable.run("drover", ["generate-key", "--output", path])
        #expect(first.status == 0)
        #expect(first.stdout.contains("Wrote a new secure cookie key to \(path)"))
        var info = stat()
        stat(path, &info)
        #expect(info.st_mode & 0o777 == 0o600)
        let original = dir.read("key")

        let again = try await Executable.run("drover", ["generate-key", "--output", path])
        #expect(again.status == 1)
        #expect(again.stderr.contains("a key already exists; keep it, or pass --force"))
        #expect(dir.read("key") == original)

        let forced = try await Executable.run("drover", ["generate-key", "--output", path, "--force"])
        #expect(forced.status == 0)
        #expect(dir.read("key") != original)
        #expect(try SecureCookieKey.load(from: path).clusterHash.count == 64)
    }

    @Test func generateKeyDefaultsToTheConfiguredKeyPath() async throws {
        let config = try ConfigDirectory(key: nil, rserver: "secure-cookie-key-file=keys/cluster.key")
        try FileManager.default.createDirectory(atPath: config.directory.url("keys"), withIntermediateDirectories: true)
        let result = try await Executable.run("drover", ["--config-dir", config.path, "generate-key"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try SecureCookieKey.load(from: config.directory.url("keys/cluster.key")).clusterHash.count == 64)
    }

    @Test func badUsageExitsTwo() async throws {
        #expect(try await Executable.run("drover", ["no-such-command"]).status == 2)
        #expect(try await Executable.run("drover", ["generate-key", "--bogus"]).status == 2)
    }
}

import DroverKernel
import DroverTesting
import Foundation
import Testing

@Suite(.enabled(if: PostgresTestServer.shouldRun))
struct ClusterFaultTests {
    @Test func nodesRideOutAPostgreSQLRestartAndAnOutage() async throws {
        let database = try await PrivatePostgres()
        let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2"], backend: .postgresql(database.server))
        try await cluster.start(0)
        try await cluster.start(1)
        try await cluster.eventually("both Online") { try await cluster.statuses().map(\.status) == ["Online", "Online"] }
        try await database.server.restart()
        try await cluster.eventually("both Online after the restart") { try await cluster.statuses().map(\.status) == ["Online", "Online"] }

        try await database.server.stop()
        try await Task.sleep(for: .seconds(4))
        #expect(cluster.process(0)?.isRunning == true && cluster.process(1)?.isRunning == true, "the database going away kills no node")
        try await database.server.start()
        let before = Date()
        try await cluster.eventually("heartbeats resume", timeout: 30) {
            let listed = try await cluster.drover(0, ["list-nodes", "--json"]).stdout
            guard let object = try JSONSerialization.jsonObject(with: Data(listed.utf8)) as? [String: Any],
                  let nodes = object["nodes"] as? [[String: Any]], nodes.count == 2 else { return false }
            return nodes.allSatisfy { node in
                guard let seen = (node["last_seen"] as? String).flatMap({ try? Date($0, strategy: .iso8601) }) else { return false }
                return seen > before.addingTimeInterval(-1) && node["status"] as? String == "Online"
            }
        }
        #expect(cluster.process(0)?.stderr.contains("PostgreSQL unavailable, retrying") == true, "the outage is logged")
        #expect(try await cluster.stop(0) == 0, "\(cluster.process(0)?.stderr ?? "")")
        #expect(try await cluster.stop(1) == 0)
    }
}

@Suite struct ClusterFailureDetectionTests {
    /// A stopped node (SIGSTOP: its port still accepts connections, nothing answers) is marked
    /// Unreachable by its peer's probe, bounded by the heartbeat interval even with `timeout=0`;
    /// once it runs again its heartbeat clears the mark.
    @Test func aStoppedNodeIsUnreachableUntilItsNextHeartbeat() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2"], backend: .sqlite,
                                            loadBalancer: "heartbeat-interval=1\ntimeout=0\ndiagnostics=tmp\ndiagnostics-file=diag.log\n")
        try await cluster.start(0)
        let stopped = try await cluster.start(1)
        try await cluster.eventually("both Online") { try await cluster.statuses().map(\.status) == ["Online", "Online"] }
        stopped.signal(SIGSTOP)
        try await cluster.eventually("node 1 Unreachable", timeout: 10) { try await cluster.status(of: "127.0.0.2") == "Unreachable" }
        try await cluster.eventually("node 0's probe gave up on node 1 and marked it", timeout: 5) {
            cluster.nodes[0].directory.read("diag.log")?.contains("event=node-unreachable") == true
        }
        stopped.signal(SIGCONT)
        try await cluster.eventually("node 1 Online again", timeout: 10) { try await cluster.status(of: "127.0.0.2") == "Online" }
        for index in 0..<2 { #expect(try await cluster.stop(index) == 0) }
    }
}

@Suite struct ClusterTLSTests {
    static var hasOpenSSL: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl") }

    func makeCertificate(in dir: TemporaryDirectory) async throws {
        let result = try await Executable.run("/usr/bin/openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                                                             "-subj", "/CN=drover-test", "-keyout", dir.url("key.pem"), "-out", dir.url("cert.pem")])
        guard result.status == 0 else { throw TestFailure("openssl failed: \(result.stderr)") }
    }

    @Test(.enabled(if: hasOpenSSL))
    func httpsNodesTalkWithoutVerificationAndAnHTTPNodeIsAProtocolMismatch() async throws {
        let certificates = TemporaryDirectory()
        try await makeCertificate(in: certificates)
        let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2"], backend: .sqlite,
                                      loadBalancer: TestCluster.scaledLoadBalancer + "verify-ssl-certs=0\ndiagnostics=tmp\ndiagnostics-file=diag.log\n",
                                      rserver: "ssl-enabled=1\nssl-certificate=\(certificates.url("cert.pem"))\nssl-certificate-key=\(certificates.url("key.pem"))\n")
        // Both nodes serve https; start them by hand since the plain-HTTP health check cannot see them.
        let first = try RunningProcess("droverd", ["--config-dir", cluster.nodes[0].path])
        try await first.waitUntil("node 0 up") { first.stderr.contains("listening") }
        let second = try RunningProcess("droverd", ["--config-dir", cluster.nodes[1].path])
        try await second.waitUntil("node 1 up") { second.stderr.contains("listening") }
        try await cluster.eventually("node 0 hears of node 1 over https", timeout: 5) {
            cluster.nodes[0].directory.read("diag.log")?.contains("event=node-joined") == true
                && cluster.nodes[0].directory.read("diag.log")?.contains("from=") == true
        }
        #expect(try await cluster.drover(0, ["list-nodes"]).stdout.contains("Protocol\nHttps no verify\n"))
        let status = try await cluster.drover(0, ["status"])
        #expect(status.status == 0, "\(status.stderr)")
        #expect(status.stdout.split(separator: "\n").count == 2)

        let plain = try await TestCluster(addresses: ["127.0.0.3"], backend: .sqlite)
        try plain.nodes[0].write("database.conf", try #require(cluster.nodes[0].directory.read("database.conf")))
        let refused = try await Executable.run("droverd", ["--config-dir", plain.nodes[0].path], timeout: 60)
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("this node speaks http but the cluster uses https-no-verify"))
        #expect(try await cluster.status(of: "127.0.0.3") == "Protocol mismatch")
        first.signal(SIGTERM)
        second.signal(SIGTERM)
        #expect(try await first.wait(timeout: 30) == 0, "\(first.stderr)")
        #expect(try await second.wait(timeout: 30) == 0, "\(second.stderr)")
    }

    @Test func aBadCertificateIsAClearStartupError() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite,
                                      rserver: "ssl-enabled=1\nssl-certificate=/nonexistent/cert.pem\nssl-certificate-key=/nonexistent/key.pem\n")
        let result = try await Executable.run("droverd", ["--config-dir", cluster.nodes[0].path], timeout: 60)
        #expect(result.status == 1)
        #expect(result.stderr.contains("cannot use ssl-certificate /nonexistent/cert.pem"))
    }
}

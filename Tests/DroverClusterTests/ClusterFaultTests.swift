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

    /// The seed's production setting, `verify-ssl-certs=1`, with ordinary certificates: each
    /// node has a host name (`www-host-name`, resolved through a private `/etc/hosts` in the
    /// node's own mount namespace) and a certificate for it from a CA the test makes, trusted
    /// through `ssl-ca-file`. Joins, forwarded session starts and proxying between nodes go by
    /// name with SNI and verification; a node whose certificate is for another name is refused.
    @Test(.enabled(if: hasOpenSSL && geteuid() == 0))
    func nodesWithHostNamesAndCertificatesFromAPrivateCAVerifyEachOther() async throws {
        let pki = TemporaryDirectory(prefix: "drover-pki")
        let names = (1...4).map { "node\($0).drover.test" }
        let script = """
            set -e
            cd "$1"
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj '/CN=Drover test CA' \\
                -keyout ca.key -out ca.pem 2>/dev/null
            for name in \(names.joined(separator: " ")); do
                openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$name" \\
                    -keyout "$name.key" -out "$name.csr" 2>/dev/null
                printf 'subjectAltName=DNS:%s\\n' "$name" > "$name.ext"
                openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile "$name.ext" \\
                    -out "$name.pem" 2>/dev/null
            done
            """
        let made = try await Executable.run("/bin/sh", ["-c", script, "sh", pki.path])
        #expect(made.status == 0, "\(made.stderr)")
        let hosts = try pki.write("hosts", "127.0.0.1 localhost\n" + names.enumerated().map { "127.0.0.\($0.offset + 1) \($0.element)\n" }.joined())
        let ownHosts = ["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                        #"mount --bind "$0" /etc/hosts && exec "$@""#, hosts]
        let ca = pki.url("ca.pem")
        let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"], backend: .sqlite)
        for (index, node) in cluster.nodes.enumerated() {
            // The fourth node claims node4's name with node3's certificate.
            let certificate = index == 3 ? names[2] : names[index]
            try node.write("load-balancer", TestCluster.scaledLoadBalancer + "www-host-name=\(names[index])\nssl-ca-file=\(ca)\n")
            try node.write("rserver.conf", """
                www-address=\(node.address)
                www-port=\(node.port)
                server-data-dir=data
                server-shared-storage-path=\(cluster.shared.path)
                ssl-enabled=1
                ssl-certificate=\(pki.url(certificate + ".pem"))
                ssl-certificate-key=\(pki.url(certificate + ".key"))
                session-command=\(Executable.pathForUsers("drover-demo-session"))
                auth-none=1
                """)
        }
        /// curl over https by name, trusting the test's CA: (status, body).
        func https(_ method: String, _ index: Int, _ path: String) async throws -> (Int, String) {
            let node = cluster.nodes[index]
            let result = try await Executable.run("/usr/bin/curl", [
                "-sS", "--max-time", "60", "--cacert", ca, "--resolve", "\(names[index]):\(node.port):\(node.address)",
                "-X", method, "-w", "\n%{http_code}", "https://\(names[index]):\(node.port)\(path)"], timeout: 90)
            let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n") + result.stderr)
        }
        // drover verify checks each certificate before the node starts, as the peers will.
        let good = try await Executable.run(ownHosts[0], Array(ownHosts.dropFirst()) + [Executable.path("drover"), "verify", "--config-dir",
                                                                                       cluster.nodes[0].path], timeout: 60)
        #expect(good.stdout.contains("ok    certificate \(pki.url(names[0] + ".pem")) is valid for node1.drover.test"), "\(good.stdout)")
        let bad = try await Executable.run(ownHosts[0], Array(ownHosts.dropFirst()) + [Executable.path("drover"), "verify", "--config-dir",
                                                                                      cluster.nodes[3].path], timeout: 60)
        #expect(bad.status == 2)
        #expect(bad.stdout.contains("FAIL  certificate"), "\(bad.stdout)")
        var nodes: [RunningProcess] = []
        for index in 0..<3 {
            let node = try RunningProcess(ownHosts[0], Array(ownHosts.dropFirst()) + [Executable.path("droverd"), "--config-dir", cluster.nodes[index].path])
            nodes.append(node)
            try await node.waitUntil(timeout: 60, "node \(index + 1) serves https") { try await https("GET", index, "/health-check").0 == 200 }
        }
        try await cluster.eventually("three nodes Online, each by its name") {
            let rows = try await cluster.statuses()
            return rows.count == 3 && rows.allSatisfy { $0.status == "Online" } && Set(rows.map(\.host)) == Set(names.prefix(3))
        }
        #expect(try await cluster.drover(0, ["list-nodes"]).stdout.contains("Protocol\nHttps\n"))
        // Sessions started through node 1 land on all three (two of them forwarded by name),
        // and each answers through a node that does not run it (proxied by name).
        var owners: Set<Int64> = []
        for n in 0..<6 {
            let (status, body) = try await https("POST", 0, "/api/sessions")
            #expect(status == 201, "\(body)")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any], "\(body)")
            let id = try #require(object["id"] as? String)
            let owner = try #require((object["node"] as? NSNumber)?.int64Value)
            owners.insert(owner)
            let rows = try await cluster.statuses()
            let ownerIndex = try #require(names.firstIndex(of: rows.first { $0.id == owner }?.host ?? ""))
            let via = (ownerIndex + 1 + n % 2) % 3
            let (counted, answer) = try await https("POST", via, "/s/\(id)/count")
            let count = (try? JSONSerialization.jsonObject(with: Data(answer.utf8)) as? [String: Any])?["count"] as? Int
            #expect(counted == 200 && count == 1, "through \(names[via]): \(counted) \(answer)")
        }
        #expect(owners.count == 3, "the sessions spread over the three nodes: \(owners)")
        for node in nodes { #expect(node.stderr.contains("event=peer-call-failed") == false, "\(node.stderr.suffix(1500))") }

        // node4 with node3's certificate: the others would refuse it, so it does not start.
        let impostor = try await Executable.run(ownHosts[0], Array(ownHosts.dropFirst()) + [Executable.path("droverd"), "--config-dir",
                                                                                           cluster.nodes[3].path], timeout: 60)
        #expect(impostor.status == 1)
        #expect(impostor.stderr.contains("does not match this node's name node4.drover.test"), "\(impostor.stderr)")
        #expect(impostor.stderr.split(separator: "\n").filter { $0.hasPrefix("droverd:") }.count == 1)
        for node in nodes { node.signal(SIGTERM) }
        for node in nodes { #expect(try await node.wait(timeout: 60) == 0) }
    }

    @Test func aBadCertificateIsAClearStartupError() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite,
                                      rserver: "ssl-enabled=1\nssl-certificate=/nonexistent/cert.pem\nssl-certificate-key=/nonexistent/key.pem\n")
        let result = try await Executable.run("droverd", ["--config-dir", cluster.nodes[0].path], timeout: 60)
        #expect(result.status == 1)
        #expect(result.stderr.contains("cannot use ssl-certificate /nonexistent/cert.pem"))
    }
}

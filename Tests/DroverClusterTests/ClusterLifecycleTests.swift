import DroverCluster
import DroverKernel
import DroverTesting
import Foundation
import Testing

@Suite struct ClusterLifecycleTests {
    @Test(arguments: ClusterBackend.enabled)
    func threeNodesJoinReportFailAndAreDeleted(backend: ClusterBackend) async throws {
        let cluster = try await TestCluster(addresses: threeAddresses, backend: try backend.make(),
                                      loadBalancer: TestCluster.scaledLoadBalancer + "diagnostics=tmp\ndiagnostics-file=diag.log\n")
        // Node 2 drifts from the others: one more setting, and other launcher keys.
        try cluster.nodes[2].write("load-balancer", "heartbeat-interval=1\ndiagnostics=tmp\ndiagnostics-file=diag.log\ntimeout=7\n")
        for index in 0..<3 { try cluster.nodes[index].write("launcher.pub", index == 2 ? "other key" : "shared key") }
        for index in 0..<3 { try await cluster.start(index) }
        try await cluster.eventually("three nodes Online") {
            try await cluster.statuses().map(\.status) == ["Online", "Online", "Online"]
        }
        let ids = try await cluster.statuses().map(\.id)
        let listing = try await cluster.drover(0, ["list-nodes"]).stdout
        #expect(listing.contains("Warning: node \(ids[2]) (127.0.0.3:\(cluster.nodes[2].port)) has a configuration that differs from most nodes'"))
        #expect(listing.contains("Warning: node \(ids[2]) (127.0.0.3:\(cluster.nodes[2].port)) has launcher.pub/launcher.pem that differ from most nodes'"))
        #expect(!listing.contains("Warning: node \(ids[0])"))
        let verify = try await cluster.drover(2, ["verify"])
        #expect(verify.stdout.contains("warn  this node's configuration"), "\(verify.stdout)")

        // A joining node tells its peers at once: node 0 logs node 2's arrival, received from node 2.
        try await cluster.eventually("node 0 hears of node 2", timeout: 3) {
            cluster.nodes[0].directory.read("diag.log")?.contains("event=node-joined node=\(ids[2]) from=") == true
        }

        // The status endpoint: the seed's format, to localhost and to nodes only.
        let node0 = cluster.nodes[0]
        let status = try await RawHTTPClient.request(host: node0.address, port: node0.port, path: "/load-balancer/status")
        #expect(status.status == 200)
        let lines = status.body.split(separator: "\n")
        #expect(lines.count == 3)
        for (line, node) in zip(lines, cluster.nodes) {
            // The seed's line, then the node's release (as the build embedded it) and protocol.
            let version = NSRegularExpression.escapedPattern(for: ClusterMembership.currentVersion)
            #expect(line.range(of: #"^\#(node.address):\#(node.port) Load: [0-9.e+]+, [0-9.e+]+, [0-9.e+]+ Version: \#(version) \(protocol 1\)$"#,
                               options: .regularExpression) != nil, "\(line)")
        }
        #expect(try await RawHTTPClient.request(host: node0.address, port: node0.port, path: "/load-balancer/status", localAddress: "127.0.0.2").status == 200)
        let outsider = try await RawHTTPClient.request(host: node0.address, port: node0.port, path: "/load-balancer/status", localAddress: "127.0.0.9")
        #expect(outsider.status == 403)
        let viaCLI = try await cluster.drover(0, ["status"])
        #expect(viaCLI.status == 0)
        #expect(viaCLI.stdout.split(separator: "\n").count == 3)

        // Offline mode, applied live.
        #expect(try await cluster.drover(1, ["offline"]).status == 0)
        try await cluster.eventually("node 1 in offline mode", timeout: 5) { try await cluster.status(of: "127.0.0.2") == "Offline mode" }
        #expect(try await RawHTTPClient.request(host: node0.address, port: node0.port, path: "/load-balancer/status").body.contains("127.0.0.2:\(cluster.nodes[1].port) (offline)"))
        #expect(try await cluster.drover(1, ["online"]).status == 0)
        try await cluster.eventually("node 1 back online", timeout: 5) { try await cluster.status(of: "127.0.0.2") == "Online" }

        // SIGTERM: Offline at once; SIGKILL: Unreachable within two heartbeat intervals and a
        // second (a peer finds it silent and cannot reach it).
        #expect(try await cluster.stop(1, signal: SIGTERM) == 0)
        #expect(try await cluster.status(of: "127.0.0.2") == "Offline")
        #expect(try await cluster.stop(2, signal: SIGKILL) == 128 + SIGKILL)
        #expect(try await cluster.status(of: "127.0.0.3") == "Online", "not yet stale")
        try await cluster.eventually("node 2 Unreachable", timeout: 6) { try await cluster.status(of: "127.0.0.3") == "Unreachable" }
        // Found by a peer's probe, not only by its heartbeat going stale: the mark is recorded.
        // (How fast is the failover benchmark's to measure: Benchmarks/failover.)
        try await cluster.eventually("a peer records why", timeout: 2) {
            (cluster.nodes[0].directory.read("diag.log") ?? "").contains("event=node-unreachable node=\(ids[2])")
        }
        #expect(try await RawHTTPClient.request(host: node0.address, port: node0.port, path: "/load-balancer/status").body.contains("127.0.0.3:\(cluster.nodes[2].port) (unreachable)"))

        // delete-node refuses a live node and removes a stopped one.
        let refused = try await cluster.drover(1, ["delete-node", String(ids[0])])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("is Online"))
        let deleted = try await cluster.drover(0, ["delete-node", String(ids[1])])
        #expect(deleted.status == 0, "\(deleted.stderr)")
        #expect(deleted.stdout == "Node \(ids[1]) deleted.\n")
        #expect(try await cluster.statuses().map(\.id) == [ids[0], ids[2]])
        try await cluster.eventually("node 0 hears of the deletion", timeout: 3) {
            cluster.nodes[0].directory.read("diag.log")?.contains("event=node-deleted node=\(ids[1])") == true
        }
        #expect(try await cluster.drover(0, ["delete-node", "999"]).status == 1)
        #expect(try await cluster.stop(0) == 0)
    }

    @Test(arguments: ClusterBackend.enabled)
    func aNodeWithAnotherKeyIsRefusedWhileTheClusterIsUpAndRedefinesItWhenAlone(backend: ClusterBackend) async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: try backend.make())
        try await cluster.start(0)
        let stranger = try await TestCluster(addresses: ["127.0.0.4"], backend: .sqlite, key: "a-different-key-9876543210")
        try stranger.nodes[0].write("database.conf", try #require(cluster.nodes[0].directory.read("database.conf")))
        let refused = try await Executable.run("droverd", ["--config-dir", stranger.nodes[0].path], timeout: 60)
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("secure cookie key") && refused.stderr.contains("differs from the cluster's"), "\(refused.stderr)")
        #expect(try await cluster.status(of: "127.0.0.4") == "Invalid secure cookie key")

        #expect(try await cluster.stop(0) == 0)
        try await stranger.start(0)
        try await cluster.eventually("the stranger defines the cluster anew") { try await cluster.status(of: "127.0.0.4") == "Online" }
        #expect(try await cluster.drover(0, ["list-nodes"]).stdout.contains("Protocol\nHttp\n"))
        let old = try await Executable.run("droverd", ["--config-dir", cluster.nodes[0].path], timeout: 60)
        #expect(old.status == 1, "now the first key is the odd one out")
        #expect(try await stranger.stop(0) == 0)
    }

    /// A SQLite registry shared by two machines (over NFS) would lose SQLite's locking: the
    /// nodes of a second machine are refused while the first machine's run, before they write
    /// anything, and `drover verify` on that machine fails the same way; once none of the first
    /// machine's nodes is Online the other machine may take the file over. "Another machine" is
    /// a mount namespace with its own `/etc/machine-id`.
    @Test(.enabled(if: geteuid() == 0))
    func aSQLiteRegistryServesTheNodesOfOneMachineOnly() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2", "127.0.0.3"], backend: .sqlite)
        let machine = TemporaryDirectory(prefix: "drover-machine")
        let otherID = try machine.write("machine-id", "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a\n")
        let elsewhere = ["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                         #"mount --bind "$0" /etc/machine-id && exec "$@""#, otherID]
        func onTheOtherMachine(_ command: [String]) async throws -> Executable.Result {
            try await Executable.run(elsewhere[0], Array(elsewhere.dropFirst()) + command, timeout: 60)
        }
        try await cluster.start(0)
        let refused = try await onTheOtherMachine([Executable.path("droverd"), "--config-dir", cluster.nodes[1].path])
        #expect(refused.status == 2)
        #expect(refused.stderr.contains("use PostgreSQL for a cluster of several machines"), "\(refused.stderr)")
        #expect(try await cluster.statuses().map(\.host) == ["127.0.0.1"], "the refused node wrote no row")
        let verified = try await onTheOtherMachine([Executable.path("drover"), "verify", "--config-dir", cluster.nodes[1].path])
        #expect(verified.status == 2)
        #expect(verified.stdout.contains("FAIL  registry: the SQLite registry"), "\(verified.stdout)")
        // A second node of the same machine is welcome.
        try await cluster.start(2)
        #expect(try await cluster.status(of: "127.0.0.3") == "Online")
        #expect(try await cluster.drover(2, ["verify"]).status == 0)

        // With the first machine's nodes stopped, the other machine takes the file over.
        for index in [0, 2] { #expect(try await cluster.stop(index) == 0) }
        try await cluster.start(1, launcher: elsewhere)
        #expect(try await cluster.status(of: "127.0.0.2") == "Online")
        let now = try await Executable.run("droverd", ["--config-dir", cluster.nodes[0].path], timeout: 60)
        #expect(now.status == 2, "now this machine is the other one")
        #expect(try await cluster.stop(1) == 0)
    }

    @Test func resetClusterThenTheNextReloadOrStartDefinesItAgain() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2"], backend: .sqlite)
        try await cluster.start(0)
        let reset = try await cluster.drover(0, ["reset-cluster"])
        #expect(reset.status == 0)
        #expect(reset.stdout.contains("Cluster definition cleared"))
        #expect(try await cluster.drover(0, ["list-nodes"]).stdout.contains("Protocol\n(not defined"))
        #expect(try await cluster.drover(0, ["reload"]).status == 0)
        try await cluster.eventually("the reloaded node defines the cluster") {
            try await cluster.drover(0, ["list-nodes"]).stdout.contains("Protocol\nHttp\n")
        }
        #expect(try await cluster.drover(0, ["reset-cluster"]).status == 0)
        try await cluster.start(1)
        #expect(try await cluster.drover(0, ["list-nodes"]).stdout.contains("Protocol\nHttp\n"))
        #expect(try await cluster.stop(1) == 0)
        #expect(try await cluster.stop(0) == 0)
        #expect(try await cluster.drover(0, ["reload"]).status == 1, "no daemon left to reload")
    }

    @Test func reloadAppliesDiagnosticsAndTimeoutLiveAndKeepsRunningSettingsOnABadFile() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite)
        let node = try await cluster.start(0)
        try cluster.nodes[0].write("load-balancer", "heartbeat-interval=1\ntimeout=3\ndiagnostics=tmp\ndiagnostics-file=diag.log\n")
        let reloaded = try await cluster.drover(0, ["reload"])
        #expect(reloaded.status == 0, "\(reloaded.stderr)")
        #expect(reloaded.stdout.contains("Reloaded \(cluster.nodes[0].path)/load-balancer: balancer=sessions timeout=3 diagnostics=tmp"), "\(reloaded.stdout)")
        try await cluster.eventually("the reload event", timeout: 5) {
            cluster.nodes[0].directory.read("diag.log")?.contains("event=reload balancer=sessions timeout=3 diagnostics=tmp") == true
        }
        // A bad file: the command tells the truth, with the daemon's reason, and exits 1.
        try cluster.nodes[0].write("load-balancer", "balancer=nope\n")
        let refused = try await cluster.drover(0, ["reload"])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("droverd refused") && refused.stderr.contains("unknown balancer strategy 'nope'"), "\(refused.stderr)")
        #expect(!refused.stdout.contains("Reloaded"))
        // SIGHUP, the seed's way, still reloads; a refusal is logged and the settings kept.
        try cluster.nodes[0].write("load-balancer", "balancer=fastest\n")
        node.signal(SIGHUP)
        try await cluster.eventually("the refusal is logged", timeout: 5) {
            node.stderr.contains("reload refused, keeping the running settings") && node.stderr.contains("unknown balancer strategy 'fastest'")
        }
        #expect(cluster.nodes[0].directory.read("diag.log")?.contains("event=reload-failed") == true)
        #expect(try await RawHTTPClient.request(host: "127.0.0.1", port: cluster.nodes[0].port, path: "/health-check").status == 200)
        #expect(try await cluster.stop(0) == 0)
    }

    /// Issue 34, item 7: a reload applies each changed key whole, or says it takes a restart and
    /// keeps the running value; it never leaves one half-applied.
    @Test func reloadSaysWhichChangedKeysTakeARestartAndKeepsTheirRunningValues() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite)
        try await cluster.start(0)
        let rserver = try String(contentsOfFile: cluster.nodes[0].path + "/rserver.conf", encoding: .utf8)
        try cluster.nodes[0].write("rserver.conf", rserver + "session-timeout-minutes=5\n")
        try cluster.nodes[0].write("load-balancer", "heartbeat-interval=2\ntimeout=2\nverify-ssl-certs=0\nwww-host-name=other.example\nmax-sessions-per-node=5\n")
        let reloaded = try await cluster.drover(0, ["reload"])
        #expect(reloaded.status == 0, "\(reloaded.stderr)")
        #expect(reloaded.stdout.contains("balancer=sessions timeout=2 diagnostics=off max-sessions-per-node=5; changed but applied only after a restart of droverd: "
                                         + "www-host-name (running unset, file other.example), verify-ssl-certs (running true, file false), "
                                         + "heartbeat-interval (running 1, file 2), rserver.conf (read at start)"), "\(reloaded.stdout)")
        // Still the node it was: its name and timing unchanged, so its peers and guards agree.
        #expect(try await RawHTTPClient.request(host: "127.0.0.1", port: cluster.nodes[0].port, path: "/health-check").status == 200)
        let again = try await cluster.drover(0, ["reload"])
        #expect(again.stdout.contains("heartbeat-interval (running 1, file 2)"), "a kept key is still reported: \(again.stdout)")
        #expect(try await cluster.stop(0) == 0)
    }
}

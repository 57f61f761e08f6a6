import DroverKernel
import DroverTesting
import Foundation
import Testing

/// One scrape of a node's `GET /metrics`: every series with its labels and value.
struct Scrape {
    struct Series {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    let text: String
    let series: [Series]

    init(_ text: String) throws {
        self.text = text
        var series: [Series] = []
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                throw TestFailure("not a sample line: \(line)")
            }
            let key = line[..<space]
            var labels: [String: String] = [:]
            var name = String(key)
            if let brace = key.firstIndex(of: "{") {
                name = String(key[..<brace])
                // Label values in these tests hold no quote, comma or brace.
                for pair in key[key.index(after: brace)...].dropLast().split(separator: ",") {
                    let parts = pair.split(separator: "=", maxSplits: 1)
                    labels[String(parts[0])] = String(parts[1].dropFirst().dropLast())
                }
            }
            series.append(Series(name: name, labels: labels, value: value))
        }
        self.series = series
    }

    /// The sum of `name`'s series whose labels include `labels`.
    func sum(_ name: String, _ labels: [String: String] = [:]) -> Double {
        series.filter { one in one.name == name && labels.allSatisfy { one.labels[$0.key] == $0.value } }.reduce(0) { $0 + $1.value }
    }
}

@Suite(.serialized) struct MetricsTests {
    static let promtool = ProcessInfo.processInfo.environment["DROVER_TEST_PROMTOOL"]

    /// Scrapes `node` and has Prometheus's own checker (`promtool check metrics`, which also
    /// lints names, units and help) read the text.
    func scrape(_ node: ConfigDirectory, promtool: String) async throws -> Scrape {
        let response = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/metrics")
        #expect(response.status == 200, "\(response.body)")
        #expect(response.header("Content-Type")?.hasPrefix("text/plain; version=0.0.4") == true)
        let checked = try await Executable.run(promtool, ["check", "metrics"], stdin: response.body)
        #expect(checked.status == 0, "promtool check metrics: \(checked.stdout)\(checked.stderr)")
        return try Scrape(response.body)
    }

    /// Issue 34, item 7: every counter and histogram exists from the first scrape, at zero, for
    /// each label set known in advance, so a dashboard's rate() has a start.
    @Test(.enabled(if: promtool != nil || ProcessInfo.processInfo.environment["CI"] == "true"))
    func everySeriesKnownInAdvanceIsThereAtZeroFromTheFirstScrape() async throws {
        let promtool = try #require(Self.promtool, "no promtool: scripts/test.sh takes it out of Debian's prometheus package")
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite, rserver: "session-command=\(demoCommand)\nauth-none=1\n")
        try await cluster.start(0)
        let first = try await scrape(cluster.nodes[0], promtool: promtool)
        func zero(_ name: String, _ labels: [String: String]) {
            let found = first.series.filter { one in one.name == name && labels.allSatisfy { one.labels[$0.key] == $0.value } }
            #expect(found.count == 1 && found.first?.value == 0, "\(name) \(labels): \(found.map(\.value))")
        }
        for outcome in ["placed", "moved-meanwhile", "no-node", "failed"] { zero("drover_placements_total", ["strategy": "sessions", "outcome": outcome]) }
        zero("drover_placement_duration_seconds_count", ["strategy": "sessions"])
        for reason in ["status-address", "internal-call-signature", "hop-signature", "sign-in-failed", "sign-in-throttled", "websocket-origin"] {
            zero("drover_requests_refused_total", ["reason": reason])
        }
        for how in ["suspended", "quit", "exited"] { zero("drover_session_stops_total", ["how": how]) }
        for reason in ["exited", "lease-lost", "droverd-silent", "guard-died", "failed", "taken-away"] { zero("drover_session_unasked_ends_total", ["reason": reason]) }
        for call in ["node-joined", "node-left", "node-deleted", "node-status", "session-moved", "revocations-changed"] {
            zero("drover_peer_call_failures_total", ["call": call])
        }
        for operation in ["place_session", "transition_session", "heartbeat", "sessions"] { zero("drover_registry_errors_total", ["operation": operation]) }
        for name in ["drover_session_start_failures_total", "drover_heartbeat_failures_total", "drover_lock_breaks_total", "drover_session_start_duration_seconds_count"] {
            zero(name, [:])
        }
        #expect(try await cluster.stop(0) == 0)
    }

    @Test(.enabled(if: promtool != nil || ProcessInfo.processInfo.environment["CI"] == "true"))
    func eachNodeExportsItsOwnEventsAndTheCountersMoveWhenTheyHappen() async throws {
        let promtool = try #require(Self.promtool, "no promtool: scripts/test.sh takes it out of Debian's prometheus package")
        let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2"], backend: .sqlite,
                                            rserver: "session-command=\(demoCommand)\nauth-none=1\nmetrics-allowed-addresses=127.0.0.9, 10.0.0.0/8\n")
        for index in 0..<2 { try await cluster.start(index) }
        let (via, other) = (cluster.nodes[0], cluster.nodes[1])
        let before = [try await scrape(via, promtool: promtool), try await scrape(other, promtool: promtool)]
        #expect(before[0].sum("drover_node_status", ["status": "Online"]) == 1)
        #expect(before[0].sum("drover_node_status") == 1, "one status at a time")

        // Two sessions placed by node 0, three increments each through it, and a WebSocket.
        var ids: [String] = []
        for _ in 0..<2 {
            let created = try await RawHTTPClient.request("POST", host: via.address, port: via.port, path: "/api/sessions")
            #expect(created.status == 201, "\(created.body)")
            ids.append(try #require(json(created)["id"] as? String))
        }
        for id in ids {
            for _ in 0..<3 {
                #expect(try await RawHTTPClient.request("POST", host: via.address, port: via.port, path: "/s/\(id)/count").status == 200)
            }
        }
        let webSocket = try await RawWebSocket.hold(host: via.address, port: via.port, path: "/s/\(ids[0])/echo")
        let open = try await scrape(via, promtool: promtool)
        #expect(open.sum("drover_websockets") == 1)
        #expect(open.sum("drover_client_connections") >= 2, "the WebSocket's and the scrape's")
        #expect(open.sum("drover_sessions", ["state": "running"]) + (try await scrape(other, promtool: promtool)).sum("drover_sessions", ["state": "running"]) == 2)
        webSocket.close()
        try await cluster.eventually("the WebSocket counted closed", timeout: 10) {
            (try? await scrape(via, promtool: promtool).sum("drover_websockets")) == 0
        }

        // One suspended through node 0, then resumed by a request through it.
        #expect(try await RawHTTPClient.request("POST", host: via.address, port: via.port, path: "/api/sessions/\(ids[0])/suspend").status == 202)
        try await cluster.eventually("the session suspended", timeout: 30) { !SystemUsers.runningSessionIDs().contains(ids[0]) }
        try await cluster.eventually("the suspend counted", timeout: 10) {
            let both = [try? await scrape(via, promtool: promtool), try? await scrape(other, promtool: promtool)]
            return both.compactMap { $0?.sum("drover_session_suspend_duration_seconds_count") }.reduce(0, +) == 1
        }
        #expect(count(try await RawHTTPClient.request(host: via.address, port: via.port, path: "/s/\(ids[0])/count")) == 3)
        // The guards refresh their locks every third of the lease bound (1.8 s here).
        try await cluster.eventually("lock refreshes counted", timeout: 15) {
            let both = [try? await scrape(via, promtool: promtool), try? await scrape(other, promtool: promtool)]
            return both.compactMap { $0?.sum("drover_lock_refreshes_total") }.reduce(0, +) > 0
        }

        let after = [try await scrape(via, promtool: promtool), try await scrape(other, promtool: promtool)]
        func delta(_ name: String, _ labels: [String: String] = [:], node: Int) -> Double {
            after[node].sum(name, labels) - before[node].sum(name, labels)
        }
        func total(_ name: String, _ labels: [String: String] = [:]) -> Double {
            delta(name, labels, node: 0) + delta(name, labels, node: 1)
        }
        // Placements are counted by the node that made them: two new, one resume.
        #expect(delta("drover_placements_total", ["outcome": "placed"], node: 0) == 3)
        #expect(delta("drover_placements_total", node: 1) == 0)
        #expect(delta("drover_placement_duration_seconds_count", node: 0) == 3)
        // Starts, resumes and suspends by the node that ran them: the sum is the cluster's.
        #expect(total("drover_session_start_duration_seconds_count") == 2)
        #expect(total("drover_session_resume_duration_seconds_count") == 1)
        #expect(total("drover_session_suspend_duration_seconds_count") == 1)
        #expect(total("drover_session_stops_total", ["how": "suspended"]) == 1)
        #expect(total("drover_lock_acquisitions_total") == 3)
        #expect(total("drover_lock_breaks_total") == 0)
        // Proxied requests by the node the client reached (not again by an owner a hop reached):
        // 6 increments and 1 read answered 2xx, the WebSocket's 101.
        #expect(delta("drover_proxied_requests_total", ["class": "2xx"], node: 0) == 7)
        #expect(delta("drover_proxied_requests_total", ["class": "1xx"], node: 0) == 1)
        #expect(delta("drover_proxied_requests_total", node: 1) == 0)
        #expect(delta("drover_proxied_request_duration_seconds_count", node: 0) == 8)
        // Heartbeats and registry calls, timed.
        #expect(delta("drover_heartbeat_duration_seconds_count", node: 0) >= 1)
        #expect(delta("drover_registry_call_duration_seconds_count", ["operation": "heartbeat"], node: 1) >= 1)
        #expect(after[0].sum("drover_registry_errors_total") == 0)

        // Who may read it: this machine and the nodes, and metrics-allowed-addresses.
        let stranger = try await RawHTTPClient.request(host: via.address, port: via.port, path: "/metrics", localAddress: "127.0.0.50")
        #expect(stranger.status == 403 && stranger.body.contains("metrics-allowed-addresses"), "\(stranger.status) \(stranger.body)")
        let allowed = try await RawHTTPClient.request(host: via.address, port: via.port, path: "/metrics", localAddress: "127.0.0.9")
        #expect(allowed.status == 200)
        let refused = try await scrape(via, promtool: promtool)
        #expect(refused.sum("drover_requests_refused_total", ["reason": "status-address"]) == 1)
        for index in 0..<2 { #expect(try await cluster.stop(index) == 0) }
    }
}

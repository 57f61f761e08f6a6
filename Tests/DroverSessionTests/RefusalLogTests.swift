import DroverKernel
import DroverTesting
import Foundation
import Testing

/// Issue 34, item 5: refusals anyone can cause without signing in — a forged session hop, a
/// WebSocket from another site's page, an internal call that does not verify — write a line a
/// minute, not a line a request, and what the client chose (a path, an Origin) reaches the log
/// bounded and escaped. The metrics still count every one.
@Suite struct RefusalLogTests {
    @Test func aFloodOfRefusalsWritesALineAMinuteAndCountsEveryOne() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite, rserver: "session-command=\(demoCommand)\nauth-none=1\n")
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let id = try #require(try await startSessions(cluster, count: 1).first?.id)
        let longPath = "/load-balancer/launch-" + String(repeating: "A", count: 3000) + "\"quoted\""
        let flood = 60
        let answers = await concurrently(flood) { n -> [Int] in
            let hop = try? await RawHTTPClient.request(host: node.address, port: node.port, path: "/s/\(id)/x",
                                                       headers: [("X-Drover-Hop", "forged-\(n)")])
            let call = try? await RawHTTPClient.request("POST", host: node.address, port: node.port, path: longPath, body: "{}")
            let origin = try? await RawHTTPClient.request(host: node.address, port: node.port, path: "/s/\(id)/echo",
                                                          headers: [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13"),
                                                                    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Origin", "https://evil-\(n).example")])
            return [hop?.status ?? 0, call?.status ?? 0, origin?.status ?? 0]
        }
        #expect(answers.allSatisfy { $0 == [403, 403, 403] }, "\(Set(answers.map { "\($0)" }))")
        let log = cluster.process(0)?.stderr ?? ""
        let lines = log.split(separator: "\n")
        for event in ["event=hop-refused", "event=internal-call-refused", "event=websocket-origin-refused"] {
            let count = lines.filter { $0.contains(event) }.count
            #expect(count == 1, "\(event): \(count) lines for \(flood) refusals")
        }
        let refusedCall = try #require(lines.first { $0.contains("event=internal-call-refused") })
        #expect(refusedCall.count < 1000 && refusedCall.contains("…") && refusedCall.contains(#"\"quoted\""#) == false, "\(refusedCall.prefix(400))")
        let metrics = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/metrics").body
        for reason in ["hop-signature", "internal-call-signature", "websocket-origin"] {
            #expect(metrics.contains("drover_requests_refused_total{reason=\"\(reason)\"} \(flood)"), "\(reason): every refusal counted")
        }
        #expect(try await cluster.stop(0) == 0)
    }
}

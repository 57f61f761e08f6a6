import DroverKernel
import DroverTesting
import Foundation
import Testing

@Suite struct ClusterSecurityTests {
    @Test func internalCallsMustBeSignedFreshAndNew() async throws {
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite,
                                      loadBalancer: TestCluster.scaledLoadBalancer + "diagnostics=tmp\ndiagnostics-file=diag.log\n")
        try await cluster.start(0)
        let node = cluster.nodes[0]
        func call(_ headers: [(String, String)], path: String = "/load-balancer/ping", method: String = "GET", body: String = "") async throws -> Int {
            try await RawHTTPClient.request(method, host: node.address, port: node.port, path: path, headers: headers, body: body).status
        }
        #expect(try await call([]) == 403, "unsigned")
        let good = signedHeaders("GET", "/load-balancer/ping")
        #expect(try await call(good) == 200)
        #expect(try await call(good) == 403, "replayed")
        #expect(try await call(signedHeaders("GET", "/load-balancer/status-not")) == 403, "signed for another path")
        #expect(try await call(signedHeaders("GET", "/load-balancer/ping", key: "someone-elses-key-0123456789")) == 403, "another key")
        #expect(try await call(signedHeaders("GET", "/load-balancer/ping", now: Date().addingTimeInterval(-120))) == 403, "too old")
        #expect(try await call(signedHeaders("GET", "/load-balancer/ping", now: Date().addingTimeInterval(120))) == 403, "from the future")
        let event = #"{"id":1}"#
        #expect(try await call(signedHeaders("POST", "/load-balancer/node-status", body: event), path: "/load-balancer/node-status",
                         method: "POST", body: #"{"id":2}"#) == 403, "tampered body")
        #expect(try await call(signedHeaders("POST", "/load-balancer/node-status", body: event), path: "/load-balancer/node-status",
                         method: "POST", body: event) == 204)
        var forged = signedHeaders("GET", "/load-balancer/ping")
        forged[2].1 = String(forged[2].1.reversed())
        #expect(try await call(forged) == 403, "forged signature")
        let log = try #require(node.directory.read("diag.log"))
        #expect(log.components(separatedBy: "event=internal-call-refused").count - 1 == 8)
        #expect(log.contains("reason=\"replayed request (nonce already used)\""))
        #expect(try await cluster.stop(0) == 0)
    }
}

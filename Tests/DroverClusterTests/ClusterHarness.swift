import DroverKernel
import DroverTesting
import Foundation
import Testing

enum ClusterBackend: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite
    case postgresql

    var testDescription: String { rawValue }

    static var enabled: [ClusterBackend] {
        PostgresTestServer.shouldRun ? allCases : [.sqlite]
    }

    func make() throws -> TestCluster.Backend {
        switch self {
        case .sqlite: .sqlite
        case .postgresql: .postgresql(try PostgresTestServer.required())
        }
    }
}

let threeAddresses = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]

/// A signed request as a node would send it, for the raw HTTP client.
func signedHeaders(_ method: String, _ path: String, body: String = "", key: String = TestCluster.defaultKey,
                   now: Date = Date()) -> [(String, String)] {
    InternalRequestSignature.headers(method: method, path: path, body: Array(body.utf8),
                                     key: SecureCookieKey(bytes: Array(key.utf8)), now: now)
}

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


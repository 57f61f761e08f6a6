import DroverCluster
import DroverKernel
@testable import DroverServer
import NIOHTTP1
import Testing

/// Each error type says how a request that met it is answered (``CodedError``), not everything 503.
@Suite struct ErrorStatusTests {
    struct Unexpected: Error {}

    @Test(arguments: [
        (SessionError.notFound, 404, nil), (SessionError.busy("full"), 429, 1), (SessionError.launchFailed("x"), 500, nil),
        (SessionError.unavailable("x"), 503, 5), (SessionError.stopping("x"), 421, 1), (SessionError.moved("x"), 409, 1),
        (RegistryError.unavailable("db down"), 503, 5), (RegistryError.closed, 503, 5), (RegistryError.corrupt("row"), 500, nil),
        (RegistryError.duplicateSession("s"), 409, nil),
        (PlacementError.noEligibleNode(["node 1 is Offline"]), 503, 10), (PlacementError.invalidChoice(9), 500, nil),
        (NodeClient.Failure.notConnected("127.0.0.2:8787", reason: "refused"), 503, 5),
        (CancellationError(), 503, 5), (Unexpected(), 500, nil),
    ] as [(any Error & Sendable, Int, Int?)])
    func eachErrorHasItsStatus(error: any Error & Sendable, status: Int, retryAfter: Int?) {
        let (answered, headers) = sessionFailure(error)
        #expect(answered.code == UInt(status), "\(error)")
        #expect(headers.first(name: "Retry-After") == retryAfter.map(String.init), "\(error)")
    }
}

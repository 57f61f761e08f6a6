@testable import DroverServer
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Synchronization
import Testing

/// What the client gets when the node a hop reaches refuses it: the owner's status, reason
/// and `Retry-After`, so "retry in a moment" arrives as it was said.
@Suite struct HopOpeningHandlerTests {
    func refusal(to answer: String) throws -> HTTPResponse? { try refused(by: answer)?.response }

    func refused(by answer: String) throws -> HopOpeningHandler.Refused? {
        let channel = EmbeddedChannel()
        let opened = channel.eventLoop.makePromise(of: Void.self)
        final class Seen: Sendable { let refused = Mutex<HopOpeningHandler.Refused?>(nil) }
        let seen = Seen()
        opened.futureResult.whenFailure { error in seen.refused.withLock { $0 = error as? HopOpeningHandler.Refused } }
        try channel.pipeline.syncOperations.addHandler(HopOpeningHandler(request: ByteBuffer(string: "GET /s/x/ HTTP/1.1\r\n\r\n"),
                                                                       timeout: .seconds(5), opened: opened))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.writeInbound(ByteBuffer(string: answer))
        _ = try? channel.finish()
        return seen.refused.withLock { $0 }
    }

    @Test func anOwnersRefusalReachesTheClientWithItsRetryAfter() throws {
        let moved = try #require(try refusal(to: "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 12\r\n\r\nmoved; retry"))
        #expect(moved.status == .serviceUnavailable)
        #expect(moved.headers.first(name: "Retry-After") == "1")
        #expect(String(buffer: moved.body) == "moved; retry")
        #expect(try refused(by: "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 12\r\n\r\nmoved; retry")?.moved == false)
        let asked = try refused(by: "HTTP/1.1 503 Service Unavailable\r\nX-Drover-Hop-Moved: 1\r\nContent-Length: 0\r\n\r\n")
        #expect(asked?.moved == true, "the owner said the session moved: the opening node asks again")
        #expect(asked?.response.headers.contains(name: "X-Drover-Hop-Moved") == false, "never shown to the client")

        let notFound = try #require(try refusal(to: "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
        #expect(notFound.status == .notFound && notFound.headers.first(name: "Retry-After") == nil)
        // Only a number of seconds is passed on, never whatever else the field holds.
        let odd = try #require(try refusal(to: "HTTP/1.1 503 Service Unavailable\r\nRetry-After: soon\r\nContent-Length: 0\r\n\r\n"))
        #expect(odd.headers.first(name: "Retry-After") == nil)
    }
}

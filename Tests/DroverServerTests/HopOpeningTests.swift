import DroverKernel
@testable import DroverServer
import DroverTesting
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing

/// The first node's side of a session hop, over loopback against a stand-in owner: the opening
/// goes first on each connection, a `101` makes the connection the session's, a refusal is the
/// client's answer, and an owner that does not answer is a 504 at `session-response-timeout`.
@Suite struct HopOpeningTests {
    enum Owner {
        /// Answers the opening with 101, then each request with a small answer naming it.
        case accepts
        /// Answers the opening with this and keeps the connection.
        case refuses(String)
        /// Reads the opening and says nothing.
        case silent
    }

    /// A stand-in owner node; records the openings it got.
    final class StandIn: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        let behaviour: Owner
        let openings: Openings
        private var received = ""
        private var opened = false

        init(_ behaviour: Owner, openings: Openings) {
            self.behaviour = behaviour
            self.openings = openings
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            received += String(buffer: unwrapInboundIn(data))
            while let end = received.range(of: "\r\n\r\n") {
                let head = String(received[..<end.upperBound])
                received = String(received[end.upperBound...])
                guard opened else {
                    openings.value.withLock { $0.append(head) }
                    switch behaviour {
                    case .accepts:
                        opened = true
                        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                                                                                 + "Upgrade: drover-session\r\n\r\n")), promise: nil)
                    case .refuses(let answer):
                        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: answer)), promise: nil)
                    case .silent:
                        break
                    }
                    continue
                }
                let target = head.split(separator: " ")[1]
                let body = "session saw \(target)"
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")),
                                      promise: nil)
            }
        }
    }

    final class Openings: Sendable {
        let value = Mutex<[String]>([])
    }

    /// Sends every session request to the stand-in as to another node's session.
    struct ToOwner: ProxyResolver {
        let port: Int
        func cachedDecision(for head: HTTPRequestHead) -> ProxyDecision? {
            let opening = HopOpening(session: "abc", user: "alice") {
                SessionProxyResolver.openingRequest(session: "abc", user: "alice", destination: "127.0.0.1:\(port)",
                                                    key: SecureCookieKey(bytes: Array("hop-opening-test-key-0123456789".utf8)))
            }
            return .forward(.node(host: "127.0.0.1", port: port, name: nil, connectTimeout: .seconds(2), opening: opening), tls: nil,
                            headers: [], onFailure: {})
        }
        func decision(for head: HTTPRequestHead) async -> ProxyDecision { cachedDecision(for: head)! }
    }

    static func withNode(owner behaviour: Owner, responseTimeout: Int = 60,
                         _ body: (_ port: Int, _ openings: Openings) async throws -> Void) async throws {
        let openings = Openings()
        let owner = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(StandIn(behaviour, openings: openings)) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let server = try await HTTPServer(host: "127.0.0.1", port: 0, responder: ProxyResponseBytesTests.NoEndpoints(),
                                          proxy: ToOwner(port: owner.localAddress!.port!), sessionResponseTimeout: responseTimeout,
                                          logger: Logger(label: "test"))
        let serving = Task { try await server.run() }
        defer { serving.cancel() }
        do {
            try await body(server.localAddress!.port!, openings)
        } catch {
            try? await owner.close()
            throw error
        }
        try? await owner.close()
    }

    static let path = "/s/0123456789abcdef0123456789abcdef/"

    @Test func anAcceptedOpeningCarriesTheClientsRequestsOnOneConnection() async throws {
        try await Self.withNode(owner: .accepts) { port, openings in
            let client = try await RawHTTPClient.KeepAlive(host: "127.0.0.1", port: port)
            for name in ["one", "two"] {
                let answer = try await client.request("GET", path: Self.path + name)
                #expect(answer.status == 200 && answer.body == "session saw \(Self.path)\(name)", "\(answer.status) \(answer.body)")
            }
            let seen = openings.value.withLock { $0 }
            #expect(seen.count == 1, "one opening for the connection: \(seen)")
            let opening = try #require(seen.first)
            #expect(opening.hasPrefix("GET /s/abc/ HTTP/1.1\r\n"), "\(opening)")
            for field in ["Upgrade: drover-session", "X-Drover-Hop: 1", "X-Drover-Hop-User: alice", "X-Drover-Signature: ", "X-Drover-Nonce: "] {
                #expect(opening.contains("\r\n\(field)"), "\(field) missing: \(opening)")
            }
        }
    }

    @Test func theOwnersRefusalIsTheClientsAnswer() async throws {
        let refusal = "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n\r\nno such session\n"
        try await Self.withNode(owner: .refuses(refusal)) { port, _ in
            let answer = try await RawHTTPClient.request(host: "127.0.0.1", port: port, path: Self.path + "x")
            #expect(answer.status == 404 && answer.body == "no such session\n", "\(answer.status) \(answer.body)")
        }
        try await Self.withNode(owner: .refuses("SSH-2.0-not-http\r\n\r\n")) { port, _ in
            let answer = try await RawHTTPClient.request(host: "127.0.0.1", port: port, path: Self.path + "x")
            #expect(answer.status == 502 && answer.body.contains("not HTTP"), "\(answer.status) \(answer.body)")
        }
    }

    @Test func anOwnerThatDoesNotAnswerIsA504AtTheResponseTimeout() async throws {
        try await Self.withNode(owner: .silent, responseTimeout: 1) { port, _ in
            let answer = try await RawHTTPClient.request(host: "127.0.0.1", port: port, path: Self.path + "x")
            #expect(answer.status == 504 && answer.body.contains("session-response-timeout"), "\(answer.status) \(answer.body)")
        }
    }
}

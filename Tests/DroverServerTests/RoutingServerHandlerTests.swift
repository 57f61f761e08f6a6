@testable import DroverServer
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Synchronization
import Testing

/// The connection handler in a channel without sockets: it carries out what its state machine
/// says, in order, for the node's own endpoints and for requests answered without a session.
/// Forwarding to a real upstream is tested with real processes (`ProxyHTTPTests`, the session
/// suites).
@Suite struct RoutingServerHandlerTests {
    struct Responder: HTTPResponder {
        func immediateResponse(to head: HTTPRequestHead) -> HTTPResponse? {
            head.uri == "/health-check" ? .text(.ok, "alive\n") : nil
        }

        func respond(to request: HTTPRequest) async -> HTTPResponse {
            .text(.ok, "\(request.head.method) \(request.path) \(request.body.readableBytes)\n")
        }
    }

    /// Answers every session request with 404, at once or after `gate` opens.
    struct Refusing: ProxyResolver {
        let cached: Bool
        let gate: Gate

        func cachedDecision(for head: HTTPRequestHead) -> ProxyDecision? {
            cached ? .respond(.text(.notFound, "no session\n")) : nil
        }

        func decision(for head: HTTPRequestHead) async -> ProxyDecision {
            await gate.wait()
            return .respond(.text(.notFound, "no session\n"))
        }
    }

    /// A one-shot latch that async code can wait on.
    final class Gate: Sendable {
        private let state = Mutex<(open: Bool, waiting: [CheckedContinuation<Void, Never>])>((false, []))

        func wait() async {
            await withCheckedContinuation { continuation in
                let resumeNow = state.withLock { state in
                    if state.open { return true }
                    state.waiting.append(continuation)
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        }

        func open() {
            let waiting = state.withLock { state in
                state.open = true
                defer { state.waiting = [] }
                return state.waiting
            }
            for continuation in waiting { continuation.resume() }
        }
    }

    static func channel(proxy: (any ProxyResolver)? = nil) async throws -> NIOAsyncTestingChannel {
        let channel = NIOAsyncTestingChannel()
        try await channel.eventLoop.submit {
            let handler = RoutingServerHandler(responder: Responder(), proxy: proxy, isTLS: false, responseTimeout: .seconds(60),
                                               logger: Logger(label: "test"))
            try channel.pipeline.syncOperations.addHandler(handler, name: PipelineHandlerName.router)
        }.get()
        return channel
    }

    static func request(_ channel: NIOAsyncTestingChannel, _ uri: String, headers: HTTPHeaders = [:]) async throws {
        try await request(channel, .GET, uri, headers: headers)
    }

    static func request(_ channel: NIOAsyncTestingChannel, _ method: HTTPMethod, _ uri: String, body: String? = nil,
                        headers: HTTPHeaders = [:]) async throws {
        try await channel.writeInbound(HTTPServerRequestPart.head(HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: headers)))
        if let body { try await channel.writeInbound(HTTPServerRequestPart.body(ByteBuffer(string: body))) }
        try await channel.writeInbound(HTTPServerRequestPart.end(nil))
    }

    /// The next whole response written to the client (as bytes: the handler writes no parts),
    /// read back by the proxy's own response framer.
    static func response(_ channel: NIOAsyncTestingChannel) async throws -> (head: HTTPResponseHead, body: String) {
        var framer = UpstreamResponseFramer()
        framer.expect(method: .GET, dechunk: false)
        var head: HTTPResponseHead?
        var body = ""
        while true {
            framer.receive(try await channel.waitForOutboundWrite(as: ByteBuffer.self))
            while let event = try framer.next() {
                switch event {
                case .head(let parsed): head = HTTPResponseHead(version: .http1_1, status: parsed.responseStatus, headers: parsed.headers)
                case .body(let chunk): body += String(buffer: chunk)
                case .end:
                    guard let head else { throw TestFailure("a response ended without a head") }
                    return (head, body)
                }
            }
        }
    }

    struct TestFailure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    static func autoRead(_ channel: NIOAsyncTestingChannel) -> Bool? {
        channel.options.last { $0.option is ChannelOptions.Types.AutoReadOption }?.value as? Bool
    }

    @Test func anImmediateAnswerIsWrittenWithItsLength() async throws {
        let channel = try await Self.channel()
        try await Self.request(channel, "/health-check")
        let (head, body) = try await Self.response(channel)
        #expect(head.status == .ok)
        #expect(head.headers["Content-Length"] == ["6"])
        #expect(body == "alive\n")
    }

    @Test func theRespondersAnswerGetsTheWholeBody() async throws {
        let channel = try await Self.channel()
        try await Self.request(channel, .POST, "/api/sessions?x=1", body: "abc")
        let (head, body) = try await Self.response(channel)
        #expect(head.status == .ok)
        #expect(body == "POST /api/sessions 3\n")
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        let channel = try await Self.channel()
        try await Self.request(channel, "/first")
        try await Self.request(channel, .POST, "/second", body: "22")
        try await Self.request(channel, "/health-check")
        #expect(try await Self.response(channel).body == "GET /first 0\n")
        #expect(try await Self.response(channel).body == "POST /second 2\n")
        #expect(try await Self.response(channel).body == "alive\n")
        #expect(Self.autoRead(channel) != false, "reads were left paused")
    }

    @Test func aBodyOverTheLimitGets413() async throws {
        let channel = try await Self.channel()
        try await channel.writeInbound(HTTPServerRequestPart.head(HTTPRequestHead(version: .http1_1, method: .POST, uri: "/api/sessions")))
        try await channel.writeInbound(HTTPServerRequestPart.body(ByteBuffer(repeating: 0x61, count: ProxyConnectionStateMachine.maximumBodySize + 1)))
        try await channel.writeInbound(HTTPServerRequestPart.end(nil))
        #expect(try await Self.response(channel).head.status == .payloadTooLarge)
    }

    @Test func aClientThatAsksToCloseIsClosedAfterItsAnswer() async throws {
        let channel = try await Self.channel()
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).get()
        try await Self.request(channel, "/health-check", headers: ["Connection": "close"])
        let (head, _) = try await Self.response(channel)
        #expect(head.headers["Connection"] == ["close"])
        try await channel.closeFuture.get()
    }

    @Test func aStoppingNodeClosesAnIdleKeepAliveConnection() async throws {
        let channel = try await Self.channel()
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).get()
        try await Self.request(channel, "/health-check")
        #expect(try await Self.response(channel).head.headers["Connection"].isEmpty)
        await channel.testingEventLoop.run()
        #expect(channel.isActive, "kept alive until the node stops")
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        await channel.testingEventLoop.run()
        #expect(!channel.isActive)
    }

    @Test func aSessionRequestAnsweredFromMemoryIsAnsweredAtOnce() async throws {
        let channel = try await Self.channel(proxy: Refusing(cached: true, gate: Gate()))
        try await Self.request(channel, "/s/abc/x")
        let (head, body) = try await Self.response(channel)
        #expect(head.status == .notFound)
        #expect(body == "no session\n")
    }

    @Test func readsPauseWhileASessionRequestsDestinationIsDecided() async throws {
        let gate = Gate()
        let channel = try await Self.channel(proxy: Refusing(cached: false, gate: gate))
        try await channel.writeInbound(HTTPServerRequestPart.head(HTTPRequestHead(version: .http1_1, method: .POST, uri: "/s/abc/x")))
        #expect(Self.autoRead(channel) == false)
        gate.open()
        let (head, _) = try await Self.response(channel)
        #expect(head.status == .notFound)
        #expect(Self.autoRead(channel) == true, "the rest of the body must be read to be dropped")
        try await channel.writeInbound(HTTPServerRequestPart.body(ByteBuffer(string: "dropped")))
        try await channel.writeInbound(HTTPServerRequestPart.end(nil))
        try await Self.request(channel, "/health-check")
        #expect(try await Self.response(channel).body == "alive\n")
    }
}

@testable import DroverServer
import DroverTesting
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing

/// Session answers pass through a node's real HTTP server as the bytes they are: over loopback,
/// a stand-in session writes scripted bytes, and the client reads what the proxy made of them.
@Suite struct ProxyResponseBytesTests {
    /// Answers each request with the bytes scripted for its path's last segment, closing the
    /// connection after when the script says so; `echo` answers with the request as it came
    /// (its body read by its `Content-Length`, or up to the chunked body's last chunk).
    final class ScriptedSession: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        static let scripts: [String: (bytes: String, close: Bool)] = [
            "length": ("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello", false),
            "chunked": ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;note=x\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n", false),
            "untilclose": ("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it", true),
            "continue": ("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
            "hopbyhop": ("HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\nX-Secret: 1\r\n"
                         + "Set-Cookie: a=1; Path=/; Domain=example.com\r\nSet-Cookie: drover-auth=forged\r\nContent-Length: 2\r\n\r\nok", false),
            "smuggled": ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false),
            "bareLF": ("HTTP/1.1 200 OK\nContent-Length: 2\n\nok", false),
            "twice": ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra", false),
            "closes": ("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", true),
        ]

        let connections: Count
        private var received = ByteBuffer()

        init(connections: Count) {
            self.connections = connections
        }

        func channelActive(context: ChannelHandlerContext) {
            connections.value.add(1, ordering: .relaxed)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var chunk = unwrapInboundIn(data)
            received.writeBuffer(&chunk)
            while let text = received.getString(at: received.readerIndex, length: received.readableBytes),
                  let end = text.range(of: "\r\n\r\n") {
                let head = String(text[..<end.upperBound])
                let path = head.split(separator: " ")[1]
                let name = String(path.split(separator: "/").last ?? "")
                if name == "echo" {
                    let rest = text[end.upperBound...]
                    let length = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                        .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) }
                    let bodyLength: Int
                    if let length {
                        guard rest.utf8.count >= length else { return }
                        bodyLength = length
                    } else {
                        guard let zero = rest.range(of: "\r\n0\r\n"), let last = rest[zero.lowerBound...].range(of: "\r\n\r\n") else { return }
                        bodyLength = rest[..<last.upperBound].utf8.count
                    }
                    let request = head + String(rest.utf8.prefix(bodyLength))!
                    received.moveReaderIndex(forwardBy: request.utf8.count)
                    context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: \(request.utf8.count)\r\n\r\n" + request)),
                                          promise: nil)
                    continue
                }
                received.moveReaderIndex(forwardBy: head.utf8.count)
                let script = Self.scripts[name] ?? ("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false)
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: script.bytes)), promise: nil)
                if script.close { context.close(promise: nil) }
            }
        }
    }

    final class Count: Sendable {
        let value = Atomic<Int>(0)
    }

    /// Sends every session request to the stand-in.
    struct ToSession: ProxyResolver {
        let port: Int
        func cachedDecision(for head: HTTPRequestHead) -> ProxyDecision? {
            .forward(.tcp(host: "127.0.0.1", port: port), tls: nil, headers: [], onFailure: {})
        }
        func decision(for head: HTTPRequestHead) async -> ProxyDecision { cachedDecision(for: head)! }
    }

    struct NoEndpoints: HTTPResponder {
        func respond(to request: HTTPRequest) async -> HTTPResponse { .text(.notFound, "none\n") }
    }

    /// A node's server proxying to a fresh stand-in session; `body` gets the server's port and
    /// the count of connections the session accepted.
    static func withProxy(_ body: (Int, Count) async throws -> Void) async throws {
        let connections = Count()
        let session = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(ScriptedSession(connections: connections)) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let server = try await HTTPServer(host: "127.0.0.1", port: 0, responder: NoEndpoints(),
                                          proxy: ToSession(port: session.localAddress!.port!), logger: Logger(label: "test"))
        let serving = Task { try await server.run() }
        do {
            try await body(server.localAddress!.port!, connections)
        } catch {
            serving.cancel()
            try? await session.close()
            throw error
        }
        serving.cancel()
        try? await session.close()
    }

    static func exchange(_ port: Int, _ raw: String) async throws -> String {
        try await RawHTTPClient.halfClosedExchange(host: "127.0.0.1", port: port, raw: raw, timeout: 15)
    }

    static func get(_ name: String, version: String = "HTTP/1.1", method: String = "GET") -> String {
        "\(method) /s/0123456789abcdef0123456789abcdef/\(name) \(version)\r\nHost: x\r\n\r\n"
    }

    @Test func aChunkedAnswerPassesByteForByteAndTheConnectionIsReused() async throws {
        try await Self.withProxy { port, connections in
            let answer = try await Self.exchange(port, Self.get("chunked") + Self.get("length"))
            #expect(answer == Self.ScriptedSession.scripts["chunked"]!.bytes + Self.ScriptedSession.scripts["length"]!.bytes)
            #expect(connections.value.load(ordering: .relaxed) == 1, "both requests went over one session connection")
        }
    }

    @Test func anHTTP10ClientGetsTheChunksDataAloneAndTheConnectionCloses() async throws {
        try await Self.withProxy { port, _ in
            let answer = try await Self.exchange(port, Self.get("chunked", version: "HTTP/1.0"))
            #expect(answer == "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello world")
        }
    }

    @Test func aBodyThatEndsWithTheSessionsConnectionEndsTheClientsToo() async throws {
        try await Self.withProxy { port, connections in
            // The second request never goes out: the first answer's end is the connection's.
            let answer = try await Self.exchange(port, Self.get("untilclose") + Self.get("length"))
            #expect(answer == "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nall of it")
            #expect(connections.value.load(ordering: .relaxed) == 1)
        }
    }

    @Test func informationalHeadsPassBeforeTheAnswerButNotToHTTP10() async throws {
        try await Self.withProxy { port, _ in
            let script = Self.ScriptedSession.scripts["continue"]!.bytes
            let answer = try await Self.exchange(port, Self.get("continue"))
            #expect(answer == script)
            let final = String(script[script.range(of: "HTTP/1.1 200")!.lowerBound...])
            let answer10 = try await Self.exchange(port, Self.get("continue", version: "HTTP/1.0"))
            #expect(answer10 == final.replacingOccurrences(of: "\r\n\r\n", with: "\r\nConnection: close\r\n\r\n"))
        }
    }

    @Test func hopByHopFieldsGoAndCookiesAreConfinedToTheSession() async throws {
        try await Self.withProxy { port, _ in
            let answer = try await Self.exchange(port, Self.get("hopbyhop"))
            #expect(answer == "HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/s/0123456789abcdef0123456789abcdef/\r\nContent-Length: 2\r\n\r\nok")
        }
    }

    @Test func theAnswerToHEADHasNoBodyWhateverItsLengthSays() async throws {
        try await Self.withProxy { port, _ in
            // The stand-in wrongly sends the body too: bytes past the answer, so the session's
            // connection is dropped after it; the client gets the head alone.
            let answer = try await Self.exchange(port, Self.get("length", method: "HEAD"))
            #expect(answer == "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n")
        }
    }

    @Test(arguments: ["smuggled", "bareLF"])
    func anAnswerThatCouldBeReadTwoWaysIs502(name: String) async throws {
        try await Self.withProxy { port, connections in
            let answer = try await Self.exchange(port, Self.get(name) + Self.get("length"))
            #expect(answer.hasPrefix("HTTP/1.1 502 Bad Gateway\r\n"))
            #expect(answer.contains("the session's answer is malformed"))
            // The next request on the connection is served, over a new session connection.
            #expect(answer.hasSuffix(Self.ScriptedSession.scripts["length"]!.bytes))
            #expect(connections.value.load(ordering: .relaxed) == 2)
        }
    }

    @Test func bytesPastTheAnswerAreNotServedToTheNextRequest() async throws {
        try await Self.withProxy { port, connections in
            let answer = try await Self.exchange(port, Self.get("twice") + Self.get("length"))
            #expect(answer == "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + Self.ScriptedSession.scripts["length"]!.bytes)
            #expect(connections.value.load(ordering: .relaxed) == 2)
        }
    }

    /// The request's head is written by the proxy (no encoder): its body goes on as it came,
    /// chunked again when the client chunked it (the decoder hands over data alone).
    @Test func requestBodiesReachTheSessionFramedAsTheClientSentThem() async throws {
        try await Self.withProxy { port, _ in
            let base = "POST /s/0123456789abcdef0123456789abcdef/echo HTTP/1.1\r\nHost: x\r\n"
            let sized = try await Self.exchange(port, base + "Content-Length: 5\r\n\r\nhello")
            #expect(sized.hasSuffix("\r\nContent-Length: 5\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: x\r\n\r\nhello"),
                    "\(sized)")
            // A trailer field the head could not carry as the client sent it does not pass
            // (ForwardedRequest.trailers).
            let trailed = base + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n"
                + "X-Drover-Hop-User: root\r\nT: 1\r\nX-Forwarded-For: 203.0.113.7\r\nCookie: \(SignInCookie.name)=x\r\n\r\n"
            let chunked = try await Self.exchange(port, trailed)
            let echoed = try #require(chunked.range(of: "\r\n\r\nPOST ").map { String(chunked[$0.upperBound...]) })
            #expect(echoed.hasPrefix("/s/0123456789abcdef0123456789abcdef/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"))
            let body = try #require(echoed.range(of: "\r\n\r\n").map { String(echoed[$0.upperBound...]) })
            // The chunks may be cut anew; their data and the trailer are the client's. (Bytes,
            // not characters: CRLF is one Character.)
            var data: [UInt8] = []
            var rest = Array(body.utf8)
            while let newline = rest.firstIndex(of: UInt8(ascii: "\n")),
                  let size = Int(String(decoding: rest[..<(newline - 1)], as: UTF8.self), radix: 16), size > 0 {
                data += rest[(newline + 1)..<(newline + 1 + size)]
                rest = Array(rest[(newline + 1 + size + 2)...])
            }
            #expect(String(decoding: data, as: UTF8.self) == "abcde")
            #expect(String(decoding: rest, as: UTF8.self) == "0\r\nT: 1\r\n\r\n")
            // The second of two pipelined requests goes to the session connection the first
            // used, its parts forwarded one by one: its trailers are filtered there too.
            let twice = try await Self.exchange(port, trailed + trailed)
            #expect(twice.components(separatedBy: "\r\n0\r\nT: 1\r\n\r\n").count == 3, "\(twice)")
            #expect(!twice.contains("X-Drover-Hop-User") && !twice.contains("203.0.113.7") && !twice.contains(SignInCookie.name), "\(twice)")
        }
    }

    @Test func aSessionThatSaysItClosesIsNotAskedAgainOnTheSameConnection() async throws {
        try await Self.withProxy { port, connections in
            let answer = try await Self.exchange(port, Self.get("closes") + Self.get("length"))
            #expect(answer == "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + Self.ScriptedSession.scripts["length"]!.bytes)
            #expect(connections.value.load(ordering: .relaxed) == 2)
        }
    }
}

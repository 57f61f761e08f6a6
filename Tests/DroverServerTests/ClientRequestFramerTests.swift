@testable import DroverServer
import DroverTesting
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

/// The client's request framer against NIO's `HTTPRequestDecoder`, the reader it is to replace:
/// on every request the decoder reads, the framer gives the same parts (split anywhere), and it
/// never reads a request the decoder refuses.
@Suite struct ClientRequestFramerTests {
    typealias Reading = RequestReading
    static func decoder(_ bytes: [UInt8]) -> Reading { RequestReading.decoder(bytes) }
    static func framer(_ bytes: [UInt8], split: Int) -> Reading { RequestReading.framer(bytes, split: split) }

    static let valid: [String] = [
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /s/abc/x?y=1 HTTP/1.0\r\n\r\n",
        "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\nGET /y HTTP/1.1\r\n\r\n",
        "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5;a=b\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\nY:  two \r\n\r\n",
        "POST /x HTTP/1.1\r\nTransfer-Encoding:  ,chunked \r\n\r\n3;q=\"a\\\"b\";t\r\nabc\r\n0\r\n\r\n",
        "PUT /x HTTP/1.1\r\ntransfer-encoding: Chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nX-Empty:\r\nX-Spaces:   padded\t \r\nX-High: caf\u{e9}\r\n\r\n",
        "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n\u{1}\u{2}binary after",
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\ntunnel bytes",
        "DELETE /api/sessions/1 HTTP/1.1\r\n\r\nOPTIONS * HTTP/1.1\r\n\r\nHEAD / HTTP/1.1\r\n\r\n",
        "M-SEARCH * HTTP/1.1\r\n\r\n",
        "GET /%20a HTTP/1.1\r\nA: 1\r\nA: 2\r\n\r\n",
    ]

    static let refused: [String] = [
        "GET / HTTP/1.1\nHost: a\n\n",
        "GET / HTTP/1.1\r\nHost: a\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\r\n\r\n",
        "GET / HTTP/2.0\r\n\r\n",
        "GET / HTTP/1.2\r\n\r\n",
        "GET  / HTTP/1.1\r\n\r\n",
        "get / HTTP/1.1\r\n\r\n",
        "FROB / HTTP/1.1\r\n\r\n",
        "GET /a b HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        "GET / HTTP/1.1\r\n Host: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        "GET / HTTP/1.1\r\nBad\u{1}Name: a\r\n\r\n",
        "GET / HTTP/1.1\r\nX: a\u{0}b\r\n\r\n",
        "GET / HTTP/1.1\r\n: empty name\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZ\r\nhello\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nBad Trailer: x\r\n\r\n",
        // Found by a security read: a Unicode comparison took KELVIN SIGN for `k`, and a quoted
        // pair let a bare LF into a chunk line.
        "POST / HTTP/1.1\r\nTransfer-Encoding: chun\u{212A}ed\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2;a=\"\\\na\"\r\nab\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2;a=\"\\\r\"\r\nab\r\n0\r\n\r\n",
        // Found by FuzzRequest: a trailer that frames the message (llhttp refuses it).
        "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nContent-Length: 27\r\n\r\n",
        "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-A: 1\r\ncontent-length: 0\r\n\r\n",
        "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nTransfer-Encoding: gzip\r\n\r\n",
        // Found by a security read: a CONNECT with a body, which llhttp takes for tunnel bytes.
        "CONNECT /s/a/ HTTP/1.1\r\nHost: h\r\nContent-Length: 27\r\n\r\nGET /x HTTP/1.1\r\nA: b\r\n\r\n",
        "CONNECT /s/a/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ]

    /// Found by FuzzRequest: a chunk size of more than 16 digits (leading zeros) was refused when
    /// its line arrived in pieces and read when it arrived whole. Now refused however it arrives
    /// (llhttp reads it: the framer is stricter, which it may be).
    @Test func aChunkSizeOfMoreThanSixteenDigitsIsRefusedHoweverItArrives() {
        let bytes = Array("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000005\r\nhello\r\n0\r\n\r\n".utf8)
        for split in [bytes.count, 1, 7] {
            let read = Self.framer(bytes, split: split)
            #expect(read.failed != nil && !read.parts.contains { $0.hasPrefix("end") }, "in pieces of \(split):\n\(read)")
        }
    }

    @Test func everyRequestTheDecoderReadsTheFramerReadsTheSameWhereverItIsSplit() {
        for text in Self.valid {
            let bytes = Array(text.utf8)
            let expected = Self.decoder(bytes)
            #expect(expected.failed == nil, "the decoder reads \(text.debugDescription): \(expected)")
            for split in [bytes.count, 1, 2, 3, 7, 16] {
                let read = Self.framer(bytes, split: split)
                #expect(read.parts == expected.parts && read.failed == nil,
                        "\(text.debugDescription) in pieces of \(split):\n\(read)\n--- the decoder:\n\(expected)")
            }
        }
    }

    @Test func whatTheDecoderRefusesTheFramerRefuses() {
        for text in Self.refused {
            let bytes = Array(text.utf8)
            let decoded = Self.decoder(bytes)
            for split in [bytes.count, 1, 5] {
                let read = Self.framer(bytes, split: split)
                #expect(read.failed != nil, "the framer read \(text.debugDescription) in pieces of \(split):\n\(read)\n--- the decoder:\n\(decoded)")
            }
        }
    }

    /// The framer decides from a request's bytes that it switches protocols, and stops after it;
    /// the rest of the node decides it from the head (``ClientRequestFramer/switchesProtocols(_:)``):
    /// to forward `Upgrade`, and to close the connection when the answer does not switch. The two
    /// agree on every spelling: a tab beside a `Connection` member (which NIO's own list reading
    /// trims, and the framer's does not) made them differ, the framer reading on after a request
    /// the node had forwarded as an upgrade.
    @Test func theNodeTakesARequestForASwitchExactlyWhenTheFramerStopsAfterIt() throws {
        let fields = [
            "Connection: Upgrade\r\nUpgrade: websocket", "connection: upgrade\r\nupgrade: h2c", "Connection: keep-alive, UPGRADE \r\nUpgrade: x",
            "Connection: keep-alive,\tupgrade\r\nUpgrade: websocket", "Connection:\tupgrade\t\r\nUpgrade: x", "Connection: upgrade\t, close\r\nUpgrade: x",
            "Connection: close\r\nConnection: upgrade\r\nUpgrade: x", "Connection: upgrade", "Upgrade: websocket",
            "Connection: upgraded\r\nUpgrade: x", "Connection: \"upgrade\"\r\nUpgrade: x", "Connection: ,,upgrade,\r\nUpgrade: x",
        ]
        var switches = 0
        for (method, field) in fields.map({ ("GET /s/a/ws", $0) }) + [("CONNECT example.com:443", "Host: example.com")] {
            var framer = ClientRequestFramer()
            var input = ByteBuffer(string: "\(method) HTTP/1.1\r\nHost: a\r\n\(field)\r\n\r\n")
            var head: HTTPRequestHead?
            while let part = try framer.next(&input) {
                if case .head(let read) = part { head = read }
                if case .end = part { break }
            }
            let read = try #require(head, "\(field.debugDescription) read")
            #expect(framer.isStopped == ClientRequestFramer.switchesProtocols(read), "\(method) with \(field.debugDescription)")
            if framer.isStopped { switches += 1 }
        }
        // The first three, two `Connection` fields, empty members around `upgrade`, and CONNECT; a
        // member with a tab beside it names no option of the framer's, so switches nothing.
        #expect(switches == 6)
    }

    /// Every request of `valid`, each byte of it changed to each of the bytes that matter to
    /// framing (and one dropped or doubled): where the framer reads a request, the decoder reads
    /// the same; what the decoder refuses, the framer does not read.
    @Test func mutatedRequestsNeverReadDifferentlyFromTheDecoder() {
        let interesting: [UInt8] = [0, 9, 10, 13, 32, 34, 44, 48, 49, 58, 59, 65, 97, 102, 127, 0xe9]
        var compared = 0
        var stricter: [String] = []
        for text in Self.valid {
            let original = Array(text.utf8)
            var variants: [[UInt8]] = []
            for index in original.indices {
                for byte in interesting where byte != original[index] {
                    var changed = original
                    changed[index] = byte
                    variants.append(changed)
                }
                var dropped = original
                dropped.remove(at: index)
                variants.append(dropped)
                var doubled = original
                doubled.insert(original[index], at: index)
                variants.append(doubled)
            }
            for bytes in variants {
                let decoded = Self.decoder(bytes)
                let read = Self.framer(bytes, split: bytes.count)
                compared += 1
                // Compare what both read before either stopped: a request the framer reads whole
                // is read the same by the decoder.
                let readWhole = read.wholeRequests
                if !(decoded.parts.count >= readWhole.count && Array(decoded.parts.prefix(readWhole.count)) == readWhole) {
                    Issue.record("\(String(decoding: bytes, as: UTF8.self).debugDescription):\n\(read)\n--- the decoder:\n\(decoded)")
                }
                if read.failed != nil, decoded.failed == nil, decoded.parts.count > readWhole.count {
                    stricter.append(String(decoding: bytes, as: UTF8.self).debugDescription)
                }
            }
        }
        #expect(compared > 10_000)
        print("ClientRequestFramerTests: \(compared) mutated requests compared; the framer refused \(stricter.count) the decoder read, e.g. \(stricter.prefix(5))")
    }
}

/// The framer in a connection's pipeline, where it stands in for `ByteToMessageHandler(HTTPRequestDecoder)`.
@Suite struct ClientRequestFramingHandlerTests {
    static let two = "GET /s/a/one HTTP/1.1\r\nHost: x\r\n\r\nPOST /s/a/two HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"

    /// The parts the handler hands on for `raw`, written in pieces of `split` bytes.
    static func parts(_ raw: String, split: Int) throws -> (parts: [String], channel: EmbeddedChannel) {
        let channel = EmbeddedChannel(handler: ClientRequestFramingHandler())
        let bytes = Array(raw.utf8)
        for start in stride(from: 0, to: bytes.count, by: split) {
            try channel.writeInbound(ByteBuffer(bytes: bytes[start..<min(start + split, bytes.count)]))
        }
        var reading = ClientRequestFramerTests.Reading()
        while let part = try channel.readInbound(as: HTTPServerRequestPart.self) { reading.note(part) }
        return (reading.parts, channel)
    }

    @Test func pipelinedRequestsComeWholeHoweverTheBytesArrive() throws {
        let expected = ["head GET /s/a/one HTTP/1.1 Host: x", "end", "head POST /s/a/two HTTP/1.1 Content-Length: 3", "body abc", "end"]
        for split in [Self.two.utf8.count, 1, 4, 33] {
            let (parts, channel) = try Self.parts(Self.two, split: split)
            #expect(parts == expected, "in pieces of \(split)")
            // The input ending between requests is no error.
            channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
            #expect(throws: Never.self) { try channel.throwIfErrorCaught() }
        }
    }

    @Test func inputThatEndsInTheMiddleOfARequestIsAnError() throws {
        for cut in ["GET /s/a/one HT", "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab"] {
            let (_, channel) = try Self.parts(cut, split: 5)
            channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
            #expect(throws: HTTPParserError.self, "\(cut.debugDescription)") { try channel.throwIfErrorCaught() }
        }
    }

    @Test func aMalformedRequestIsOneErrorAndNothingIsReadAfterIt() throws {
        let channel = EmbeddedChannel(handler: ClientRequestFramingHandler())
        #expect(throws: HTTPParserError.self) { try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n")) }
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\n\r\n"))
        #expect(try channel.readInbound(as: HTTPServerRequestPart.self) == nil)
    }

    /// After a request that switches protocols, the bytes after it wait, and go on as they came
    /// when the handler leaves (to the tunnel that replaces HTTP).
    @Test func theBytesAfterAProtocolSwitchGoOnWhenTheHandlerLeaves() throws {
        let raw = "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\u{81}\u{1}frame"
        let (parts, channel) = try Self.parts(raw, split: 7)
        #expect(parts == ["head GET /ws HTTP/1.1 Connection: Upgrade | Upgrade: websocket", "end"])
        try channel.writeInbound(ByteBuffer(string: " and more"))
        #expect(try channel.readInbound(as: HTTPServerRequestPart.self) == nil)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()  // open, as a tunnel's is
        let handler = try channel.pipeline.syncOperations.handler(type: ClientRequestFramingHandler.self)
        try channel.pipeline.syncOperations.removeHandler(handler).wait()
        let left = try #require(try channel.readInbound(as: ByteBuffer.self))
        #expect(String(buffer: left) == "\u{81}\u{1}frame and more")
    }

    /// Found by FuzzHTTP: a connection closing with bytes of a request pending (a pipelined one
    /// behind an answer that closed the connection) handed those bytes to the routing handler,
    /// which reads request parts: droverd trapped. Only after a protocol switch do bytes go on.
    @Test func theBytesOfARequestPendingWhenTheConnectionClosesGoNowhere() throws {
        for raw in ["GET /s/a/partial HT", "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /s/a/next HTTP/1.1\r\nHo"] {
            let (_, channel) = try Self.parts(raw, split: raw.utf8.count)
            // A closing channel removes its handlers: the same call as here.
            let handler = try channel.pipeline.syncOperations.handler(type: ClientRequestFramingHandler.self)
            try channel.pipeline.syncOperations.removeHandler(handler).wait()
            #expect(try channel.readInbound(as: ByteBuffer.self) == nil, "\(raw.debugDescription)")
        }
        // After a protocol switch, when the connection closes instead of becoming a tunnel.
        let channel = EmbeddedChannel(handler: ClientRequestFramingHandler())
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.writeInbound(ByteBuffer(string: "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET /s/a/x HTTP/1.1\r\n\r\n"))
        while try channel.readInbound(as: HTTPServerRequestPart.self) != nil {}
        try channel.close().wait()
        channel.embeddedEventLoop.run()  // where a closed embedded channel removes its handlers
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil, "the bytes after a switch, the connection closed")
    }

    /// A client that streams bytes after a protocol-switching request, instead of waiting for the
    /// switch, is closed once more than the cap waits (NIO's decoder buffered them all).
    @Test func aClientThatStreamsBeforeTheSwitchIsClosedAtTheCap() throws {
        let channel = EmbeddedChannel(handler: ClientRequestFramingHandler())
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.writeInbound(ByteBuffer(string: "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"))
        let piece = ByteBuffer(repeating: 0x61, count: 16 * 1024)
        for _ in 0..<(ClientRequestFramingHandler.maximumBytesAfterSwitch / piece.readableBytes) { try channel.writeInbound(piece) }
        #expect(channel.isActive, "up to the cap the bytes wait")
        try channel.writeInbound(ByteBuffer(string: "one more"))
        #expect(!channel.isActive, "past the cap the connection is closed")
    }
}

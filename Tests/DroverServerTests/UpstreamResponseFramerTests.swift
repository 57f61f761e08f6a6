@testable import DroverServer
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

/// How the proxy reads a session's answers: where each ends, what passes on, what is refused.
@Suite struct UpstreamResponseFramerTests {
    /// What the framer made of `bytes`, fed in pieces of `split` bytes (all at once when nil):
    /// the events in order (heads as their status, bodies joined), or the failure.
    static func frame(_ bytes: String, method: HTTPMethod = .GET, dechunk: Bool = false, split: Int? = nil,
                      closed: Bool = false) -> (events: [String], passed: String, failure: String?) {
        var framer = UpstreamResponseFramer()
        framer.expect(method: method, dechunk: dechunk)
        var events: [String] = []
        var passed = ""
        func note(_ event: UpstreamResponseFramer.Event) {
            switch event {
            case .head(let head): events.append("head \(head.status)")
            case .body(let chunk):
                passed += String(buffer: chunk)
                if events.last != "body" { events.append("body") }
            case .end: events.append("end")
            }
        }
        let all = Array(bytes.utf8)
        let size = split ?? max(all.count, 1)
        do {
            for start in stride(from: 0, to: all.count, by: size) {
                framer.receive(ByteBuffer(bytes: all[start..<min(start + size, all.count)]))
                while let event = try framer.next() { note(event) }
            }
            if closed, let event = framer.connectionClosed() { note(event) }
        } catch {
            return (events, passed, error.description)
        }
        return (events, passed, nil)
    }

    static let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        + "5;name=\"v\"\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Checksum: 1\r\n\r\n"

    @Test func aChunkedBodyPassesWithItsFramingHoweverTheBytesAreSplit() {
        let body = String(Self.chunked[Self.chunked.range(of: "\r\n\r\n")!.upperBound...])
        for split in [nil, 1, 2, 3, 7, 64] as [Int?] {
            let framed = Self.frame(Self.chunked, split: split)
            #expect(framed.failure == nil, "split \(split ?? 0)")
            #expect(framed.events == ["head 200", "body", "end"], "split \(split ?? 0)")
            #expect(framed.passed == body, "split \(split ?? 0)")
        }
    }

    @Test func forAnHTTP10ClientOnlyTheChunksDataPasses() {
        for split in [nil, 1, 5] as [Int?] {
            let framed = Self.frame(Self.chunked, dechunk: true, split: split)
            #expect(framed.passed == "helloabcdefghijklmnopqrstuvwxyz", "split \(split ?? 0)")
            #expect(framed.events.last == "end")
        }
    }

    @Test func aLengthEndsTheBodyAndNothingBodilessHasOne() {
        #expect(Self.frame("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", split: 2).passed == "abc")
        #expect(Self.frame("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", method: .HEAD).events == ["head 200", "end"])
        #expect(Self.frame("HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n").events == ["head 204", "end"])
        #expect(Self.frame("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n").events == ["head 304", "end"])
        #expect(Self.frame("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").events == ["head 200", "end"])
    }

    @Test func aBodyWithoutLengthEndsWithTheConnection() {
        let framed = Self.frame("HTTP/1.1 200 OK\r\n\r\nsome bytes", split: 4, closed: true)
        #expect(framed.events == ["head 200", "body", "end"])
        #expect(framed.passed == "some bytes")
        #expect(Self.frame("HTTP/1.1 200 OK\r\n\r\ncut", closed: false).events == ["head 200", "body"])
        // A length or chunks cut short have no end.
        #expect(Self.frame("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\ncut", closed: true).events == ["head 200", "body"])
    }

    @Test func informationalHeadsComeBeforeTheAnswer() {
        let framed = Self.frame("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
                                split: 5)
        #expect(framed.events == ["head 100", "head 103", "head 200", "body", "end"])
    }

    @Test func aSwitchEndsHTTPAndKeepsWhatCameAfterItForTheTunnel() throws {
        var framer = UpstreamResponseFramer()
        framer.expect(method: .GET, dechunk: false)
        framer.receive(ByteBuffer(string: "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\u{81}\u{01}a"))
        guard case .head(let head) = try framer.next() else { Issue.record("no head"); return }
        #expect(head.status == 101)
        guard case .end = try framer.next() else { Issue.record("no end"); return }
        #expect(try framer.next() == nil)
        #expect(framer.takeUpgradeRemainder().map { String(buffer: $0) } == "\u{81}\u{01}a")
        #expect(String(buffer: head.forwarded(sessionPath: nil, connection: "close"))
                == "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    }

    @Test(arguments: [
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", "both Content-Length and Transfer-Encoding"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n", "Content-Length"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n", "Content-Length"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n", "Content-Length"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\n", "Content-Length"),
        ("HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\n", "Content-Length"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\n", "Content-Length"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "chunked that is not the last"),
        ("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.0"),
        ("HTTP/1.1 200 OK\nContent-Length: 0\n\n", "CRLF"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n", "CRLF"),
        ("HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", "header line"),
        ("HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n", "header line"),
        ("HTTP/1.1 200 OK\r\nX-A: a\u{0}b\r\nContent-Length: 0\r\n\r\n", "header line"),
        ("HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n", "header line"),
        ("HTTP/2 200 OK\r\n\r\n", "status line"),
        ("HTTP/1.1 20 OK\r\n\r\n", "status line"),
        ("HTTP/1.1 099 OK\r\n\r\n", "status line"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n", "chunk size"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000000\r\n", "chunk size"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", "not followed by CRLF"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n", "CRLF"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n", "trailer"),
    ] as [(String, String)])
    func anAnswerThatCouldBeReadTwoWaysIsRefused(bytes: String, reason: String) {
        for split in [nil, 1] as [Int?] {
            let framed = Self.frame(bytes, split: split)
            #expect(framed.failure?.contains(reason) == true, "split \(split ?? 0): \(framed.failure ?? "accepted")")
            #expect(framed.events.last != "end", "a refused answer never ends normally")
        }
    }

    @Test func bytesPastTheAnswerRetireTheConnection() {
        var framer = UpstreamResponseFramer()
        framer.expect(method: .GET, dechunk: false)
        framer.receive(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlies"))
        var ends = 0
        while let event = try? framer.next() {
            if case .end = event { ends += 1 }
        }
        #expect(ends == 1)
        #expect(!framer.reusable, "the rest could pass for the next request's answer")
        var idle = UpstreamResponseFramer()
        idle.receive(ByteBuffer(string: "HTTP/1.1 200 OK\r\n\r\n"))
        #expect(throws: UpstreamResponseFramer.Failure.self) { try idle.next() }
    }

    @Test func whetherTheSessionKeepsItsConnection() {
        func reusable(_ head: String) -> Bool {
            var framer = UpstreamResponseFramer()
            framer.expect(method: .GET, dechunk: false)
            framer.receive(ByteBuffer(string: head))
            while (try? framer.next()) != nil {}
            return framer.reusable
        }
        #expect(reusable("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
        #expect(!reusable("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"))
        #expect(!reusable("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"))
        #expect(reusable("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"))
    }

    @Test func aHeadThatNeedsNothingChangedGoesOnAsItCame() {
        var framer = UpstreamResponseFramer()
        framer.expect(method: .GET, dechunk: false)
        let text = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        framer.receive(ByteBuffer(string: text))
        guard case .head(let head) = try? framer.next() else { Issue.record("no head"); return }
        #expect(String(buffer: head.forwarded(sessionPath: "/s/x/", connection: nil)) == text)
        #expect(String(buffer: head.forwarded(sessionPath: "/s/x/", connection: "close"))
                == "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    }

    /// The same answers read by NIO's own decoder (llhttp) give the same bodies: where the
    /// framer takes an answer, a second reader does not see another one.
    @Test(arguments: [
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nT: 1\r\n\r\n",
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    ])
    func llhttpReadsTheSameBody(answer: String) throws {
        let ours = Self.frame(answer, dechunk: true)
        #expect(ours.failure == nil)
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPResponseDecoder()))
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")))
        try channel.writeInbound(ByteBuffer(string: answer))
        var theirs = ""
        var ended = false
        while let part = try channel.readInbound(as: HTTPClientResponsePart.self) {
            switch part {
            case .head: break
            case .body(let chunk): theirs += String(buffer: chunk)
            case .end: ended = true
            }
        }
        #expect(ended)
        #expect(theirs == ours.passed)
        _ = try? channel.finish()
    }
}

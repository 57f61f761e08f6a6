@testable import DroverServer
import NIOCore
import NIOHTTP1
import Testing

/// Issue 34, item 3, as a property over seeded random messages: what the node forwards is framed
/// exactly as it was received. A request the state machine lets through keeps its
/// `Content-Length` or `Transfer-Encoding` in the head the session gets, whatever `Connection`
/// names; a session's answer keeps its `Content-Length` in the head the client gets.
@Suite struct FramingPropertyTests {
    /// A small deterministic generator (SplitMix64), so a failure names a case that repeats.
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func pick<T>(_ items: [T]) -> T { items[Int(next() % UInt64(items.count))] }
        mutating func chance(_ percent: UInt64) -> Bool { next() % 100 < percent }
    }

    static let tokens = ["close", "keep-alive", "Content-Length", "content-length", "CONTENT-LENGTH", "Transfer-Encoding",
                         "transfer-encoding", "Upgrade", "X-Secret", "TE", "Trailer", "Keep-Alive", "Cookie", "Host", "Te"]

    /// A `Connection` value of 1–3 random tokens, with random spacing.
    static func connection(_ random: inout Random) -> String {
        (0..<(1 + Int(random.next() % 3))).map { _ in random.pick(tokens) }.joined(separator: random.pick([",", ", ", " ,  "]))
    }

    @Test func aForwardedRequestIsFramedAsItWasReceived() {
        var random = Random(state: 0x5EED_0034)
        var checked = 0
        for _ in 0..<5_000 {
            var headers: [(String, String)] = [("Host", "node.example")]
            let chunked = random.chance(40)
            let length = Int(random.next() % 5000)
            if chunked { headers.append(("Transfer-Encoding", "chunked")) } else { headers.append(("Content-Length", String(length))) }
            if random.chance(80) { headers.append((random.pick(["Connection", "connection", "CONNECTION"]), Self.connection(&random))) }
            if random.chance(30) { headers.append(("X-Secret", "1")) }
            headers.shuffle(using: &random)
            let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/s/0123456789abcdef0123456789abcdef/x", headers: HTTPHeaders(headers))
            var machine = ProxyConnectionStateMachine(responseTimeout: .seconds(60))
            let action = machine.requestHead(head, proxied: true)
            if ProxyConnectionStateMachine.connectionNamesFraming(head.headers) {
                // Refused at once, before anything could reach a session.
                guard case .respond(let response) = action else { Issue.record("not refused: \(headers)"); continue }
                #expect(response.head.status == .badRequest)
                continue
            }
            guard case .resolve = action else { Issue.record("not resolved: \(headers)"); continue }
            let forwarded = ForwardedRequest.head(for: head, clientAddress: "192.0.2.1", isTLS: false, adding: [], upgrade: false)
            if chunked {
                #expect(forwarded.headers["Transfer-Encoding"] == ["chunked"] && !forwarded.headers.contains(name: "Content-Length"), "\(headers)")
            } else {
                #expect(forwarded.headers["Content-Length"] == [String(length)] && !forwarded.headers.contains(name: "Transfer-Encoding"), "\(headers)")
            }
            checked += 1
        }
        #expect(checked > 500, "enough requests got through to check")
    }

    @Test func aSessionsAnswerIsFramedAsItWasReceived() throws {
        var random = Random(state: 0x5EED_0035)
        for _ in 0..<5_000 {
            let length = Int(random.next() % 100_000)
            var fields = ["Content-Length: \(length)", "Content-Type: text/plain"]
            if random.chance(80) { fields.append("\(random.pick(["Connection", "connection"])): \(Self.connection(&random))") }
            if random.chance(30) { fields.append("X-Secret: 1") }
            fields.shuffle(using: &random)
            let text = "HTTP/1.1 200 OK\r\n" + fields.joined(separator: "\r\n") + "\r\n\r\n"
            let head = try UpstreamResponseHead(parsing: ByteBuffer(string: text), isHEAD: false, dechunk: false)
            #expect(head.framing == .length(length))
            let sent = String(buffer: head.forwarded(sessionPath: nil, connection: random.chance(50) ? "close" : nil))
            let lengths = sent.split(separator: "\r\n").filter { $0.lowercased().hasPrefix("content-length:") }
            #expect(lengths == ["Content-Length: \(length)"], "\(text) -> \(sent)")
        }
    }
}

extension FramingPropertyTests.Random: RandomNumberGenerator {}

import DroverServer
import NIOCore
import NIOEmbedded
import NIOHTTP1

// libFuzzer target: arbitrary bytes as a session's answer to the proxy, read by the proxy's
// response framer (`UpstreamResponseFramer`), where response smuggling would live. The first
// byte chooses the request's method (HEAD or GET), whether the client reads chunks (HTTP/1.1)
// or their data alone (HTTP/1.0), and the size of the reads the bytes arrive in; the rest is
// the answer. A finding is a crash, or:
// - the same bytes read in other pieces making another answer (events, bytes passed, refusal);
// - an answer the framer completes, and NIO's own parser (llhttp) reads whole too, with
//   another body: two readers of one answer disagreeing about where it ends.

struct Outcome: Equatable {
    var events: [String] = []
    var passed: [UInt8] = []
    var refused = false
    var ended: Bool { events.last == "end" }
}

/// The framer's reading of `bytes` in reads of `piece` bytes, up to the first answer's end.
func frame(_ bytes: [UInt8], method: HTTPMethod, dechunk: Bool, piece: Int) -> Outcome {
    var framer = UpstreamResponseFramer()
    framer.expect(method: method, dechunk: dechunk)
    var outcome = Outcome()
    func note(_ event: UpstreamResponseFramer.Event) {
        switch event {
        case .head(let head): outcome.events.append("head \(head.status) \(head.headers.count)")
        case .body(let chunk):
            outcome.passed += chunk.readableBytesView
            if outcome.events.last != "body" { outcome.events.append("body") }
        case .end: outcome.events.append("end")
        }
    }
    do {
        for start in stride(from: 0, to: bytes.count, by: piece) {
            framer.receive(ByteBuffer(bytes: bytes[start..<min(start + piece, bytes.count)]))
            while let event = try framer.next() {
                note(event)
                if outcome.ended { return outcome }
            }
        }
        if let event = framer.connectionClosed() { note(event) }
    } catch {
        outcome.refused = true
        // Bytes passed before a refusal depend on where reads ended; the refusal does not.
        outcome.passed = []
        outcome.events.removeAll { $0 == "body" }
    }
    return outcome
}

/// llhttp's body of the first answer in `bytes` (the connection closing after them), or nil
/// when it refuses them or reads no complete answer.
func llhttpBody(_ bytes: [UInt8]) -> [UInt8]? {
    let channel = EmbeddedChannel()
    defer { _ = try? channel.finish() }
    do {
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes)))
        try channel.writeInbound(ByteBuffer(bytes: bytes))
        channel.pipeline.fireChannelInactive()
        var body: [UInt8] = []
        while let part = try channel.readInbound(as: HTTPClientResponsePart.self) {
            switch part {
            case .head: break
            case .body(let chunk): body += chunk.readableBytesView
            case .end: return body
            }
        }
    } catch {}
    return nil
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzResponse(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 1 else { return 0 }
    let flags = data[0]
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    let method: HTTPMethod = flags & 1 == 0 ? .GET : .HEAD
    let dechunk = flags & 2 != 0
    let piece = Int(flags >> 2) + 1
    let whole = frame(bytes, method: method, dechunk: dechunk, piece: bytes.count)
    let pieces = frame(bytes, method: method, dechunk: dechunk, piece: piece)
    guard whole == pieces else {
        fatalError("read whole and in \(piece)-byte pieces, one answer gave two readings: \(whole) / \(pieces)")
    }
    // The differential: GET, a final answer first (llhttp reports 1xx heads in its own way).
    guard method == .GET, whole.ended, let first = whole.events.first, !first.hasPrefix("head 1") else { return 0 }
    let data = frame(bytes, method: .GET, dechunk: true, piece: bytes.count)
    if let theirs = llhttpBody(bytes), theirs != data.passed {
        fatalError("llhttp reads another body: \(theirs.count) bytes against the framer's \(data.passed.count)")
    }
    return 0
}

public import NIOCore
public import NIOHTTP1

/// Reads a session's HTTP/1.1 responses from its connection's bytes, parsing only what a proxy
/// must: where each message ends and what its head says. Bodies pass on as the very bytes that
/// came (slices of the read buffer, chunked framing included), so a response is neither decoded
/// nor encoded again; only the head is rebuilt (``UpstreamResponseHead/forwarded(sessionPath:connection:)``).
///
/// Strict where a lenient parser would let the session and the client see different messages
/// (response smuggling): lines end in CRLF and nothing else; a header name is a token with no
/// space before its colon; values carry no control characters; no folded lines; a
/// `Content-Length` is digits, once, and never comes with `Transfer-Encoding`;
/// `chunked` is the last coding or none; chunk sizes are hex digits, at most 15 of them. Bytes
/// when no response is due, or past a response's end, are an error too: the session answers
/// one request at a time. Any error ends the connection (``Failure``).
///
/// A client that spoke HTTP/1.0 cannot read chunks: for it the framer passes the chunks' data
/// alone, and the head says that the connection closes after the body (``expect(method:dechunk:)``).
public struct UpstreamResponseFramer {
    public enum Event {
        /// A response's head: a final one, or an informational (1xx) one that another head follows.
        case head(UpstreamResponseHead)
        /// Bytes to pass on to the client as they are.
        case body(ByteBuffer)
        /// The response is complete.
        case end
    }

    /// Why the session's bytes are not a response this proxy will pass on, in one line.
    public struct Failure: Error, CustomStringConvertible, Equatable {
        public let description: String
    }

    /// The largest response head taken (status line and headers).
    public static let maximumHeadSize = 64 * 1024
    /// The longest chunk-size line, extensions included, and the longest trailer line.
    static let maximumLineSize = 8 * 1024

    private enum State: Equatable {
        /// No response is due.
        case idle
        case head
        case fixed(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        /// The CRLF after a chunk's data.
        case chunkDataEnd
        /// Trailer lines, up to the empty line.
        case trailers
        /// The body ends when the session closes the connection.
        case untilClose
        /// The response is complete: its end is the next event.
        case complete
        /// A 101's head was handed out: its end is the next event, then the tunnel's bytes.
        case switched
        /// The session switched protocols (101): what follows is no longer HTTP.
        case upgraded
        case failed
    }

    private var state = State.idle
    /// What came from the session and is not handed on yet.
    private var buffer: ByteBuffer?
    /// Where in `buffer` the bytes start that were read past but not handed on: they go out as
    /// one ``Event/body(_:)`` (chunk framing included) when the input runs out or the body ends.
    private var passFrom = 0
    private var isHEAD = false
    private var dechunk = false
    /// Whether the session keeps the connection open after the response in progress.
    public private(set) var reusable = true

    public init() {}

    /// A request went to the session; its response comes next.
    /// - Parameters:
    ///   - method: the request's method (the answer to `HEAD` has no body, whatever it says).
    ///   - dechunk: the client cannot read chunked bodies (HTTP/1.0).
    public mutating func expect(method: HTTPMethod, dechunk: Bool) {
        isHEAD = method == .HEAD
        self.dechunk = dechunk
        if state == .idle { state = .head }
    }

    /// The bytes that came after a 101's head, once (the tunnel's first).
    public mutating func takeUpgradeRemainder() -> ByteBuffer? {
        guard state == .upgraded, let rest = buffer, rest.readableBytes > 0 else { return nil }
        buffer = nil
        return rest
    }

    /// The session closed the connection: the end of a body that runs until then, else nothing
    /// (a response cut short has no end; the proxy closes the client connection).
    public mutating func connectionClosed() -> Event? {
        defer { state = .failed }
        return state == .untilClose ? .end : nil
    }

    /// Takes the bytes of one read from the session; ``next()`` hands out what they make.
    public mutating func receive(_ bytes: ByteBuffer) {
        if var held = buffer, held.readableBytes > 0 {
            buffer = nil  // keeps `held` unique, so the bytes are appended in place when they fit
            held.writeImmutableBuffer(bytes)
            buffer = held
        } else {
            buffer = bytes
            passFrom = bytes.readerIndex
        }
    }

    /// The next event from the bytes received, nil until more arrive. Events are handed out one
    /// at a time, so that what an event sets off (the next pipelined request's ``expect(method:dechunk:)``)
    /// may call back into the framer.
    public mutating func next() throws(Failure) -> Event? {
        var input = buffer ?? ByteBuffer()
        buffer = nil
        defer { buffer = input.readableBytes > 0 || passFrom < input.readerIndex || state == .upgraded ? input : nil }
        return try step(&input)
    }

    private mutating func fail(_ reason: String) -> Failure {
        state = .failed
        return Failure(description: reason)
    }

    /// The bytes read past since the last event, as one, or nil when there are none.
    private mutating func passed(_ input: ByteBuffer) -> Event? {
        guard passFrom < input.readerIndex else { return nil }
        // Read again from where the passing started (`getSlice` reads only unread bytes).
        var reread = input
        reread.moveReaderIndex(to: passFrom)
        passFrom = input.readerIndex
        return reread.readSlice(length: input.readerIndex - reread.readerIndex).map { .body($0) }
    }

    /// The bytes read past, unless the chunks' data alone goes on (then they are framing).
    private mutating func skipFraming(_ input: ByteBuffer) {
        if dechunk { passFrom = input.readerIndex }
    }

    private mutating func step(_ input: inout ByteBuffer) throws(Failure) -> Event? {
        while true {
            switch state {
            case .complete:
                if let event = passed(input) { return event }
                state = .idle
                if input.readableBytes > 0 {
                    // Bytes past the answer are no answer to anything: the connection is not
                    // used again, so they cannot pass for the next request's answer.
                    input.moveReaderIndex(to: input.writerIndex)
                    passFrom = input.readerIndex
                    reusable = false
                    state = .failed
                }
                return .end
            case .idle:
                guard input.readableBytes == 0 else { throw fail("the session sent bytes when no response was due") }
                return nil
            case .failed:
                guard input.readableBytes == 0 else { throw fail("the session's connection is no longer usable") }
                return nil
            case .switched:
                state = .upgraded
                return .end
            case .upgraded:
                return nil
            case .head:
                guard let length = Self.headLength(input) else {
                    guard input.readableBytes <= Self.maximumHeadSize else { throw fail("a response head over 64 KiB") }
                    // A line ending in a bare LF would leave the head unfinished until the
                    // response timeout: refused as soon as it is seen.
                    let view = input.readableBytesView
                    if zip(view.dropFirst(), view).contains(where: { $0 == UInt8(ascii: "\n") && $1 != UInt8(ascii: "\r") })
                        || view.first == UInt8(ascii: "\n") {
                        throw fail("a line not ending in CRLF")
                    }
                    return nil
                }
                guard length <= Self.maximumHeadSize else { throw fail("a response head over 64 KiB") }
                let head: UpstreamResponseHead
                do {
                    head = try UpstreamResponseHead(parsing: input.readSlice(length: length)!, isHEAD: isHEAD, dechunk: dechunk)
                } catch {
                    throw fail(error.description)
                }
                passFrom = input.readerIndex
                if head.isInformational { return .head(head) }
                // After a 101 the connection is the tunnel's, whatever its head says.
                reusable = head.framing == .switched || head.sessionKeepsConnection
                switch head.framing {
                case .none, .length(0): state = .complete
                case .switched: state = .switched
                case .length(let length): state = .fixed(remaining: length)
                case .chunked: state = .chunkSize
                case .untilClose:
                    reusable = false
                    state = .untilClose
                }
                return .head(head)
            case .fixed(let remaining):
                guard input.readableBytes > 0 else { return nil }
                let count = min(remaining, input.readableBytes)
                input.moveReaderIndex(forwardBy: count)
                state = count == remaining ? .complete : .fixed(remaining: remaining - count)
                return passed(input)
            case .untilClose:
                guard input.readableBytes > 0 else { return nil }
                input.moveReaderIndex(to: input.writerIndex)
                return passed(input)
            case .chunkSize:
                guard let line = try lineLength(input) else { return passed(input) }
                guard let size = Self.chunkSize(input.readableBytesView.prefix(line - 2)) else {
                    throw fail("a malformed chunk size line")
                }
                input.moveReaderIndex(forwardBy: line)
                skipFraming(input)
                state = size == 0 ? .trailers : .chunkData(remaining: size)
            case .chunkData(let remaining):
                guard input.readableBytes > 0 else { return passed(input) }
                let count = min(remaining, input.readableBytes)
                input.moveReaderIndex(forwardBy: count)
                state = count == remaining ? .chunkDataEnd : .chunkData(remaining: remaining - count)
                if dechunk { return passed(input) }
            case .chunkDataEnd:
                guard input.readableBytes >= 2 else {
                    if let first = input.readableBytesView.first, first != UInt8(ascii: "\r") {
                        throw fail("a chunk's data not followed by CRLF")
                    }
                    return passed(input)
                }
                guard input.readableBytesView.starts(with: [UInt8(ascii: "\r"), UInt8(ascii: "\n")]) else {
                    throw fail("a chunk's data not followed by CRLF")
                }
                input.moveReaderIndex(forwardBy: 2)
                skipFraming(input)
                state = .chunkSize
            case .trailers:
                guard let line = try lineLength(input) else { return passed(input) }
                if line > 2, !UpstreamResponseHead.isFieldLine(input.readableBytesView.prefix(line - 2)) {
                    throw fail("a malformed trailer line")
                }
                input.moveReaderIndex(forwardBy: line)
                skipFraming(input)
                if line == 2 { state = .complete }
            }
        }
    }

    /// The length of the line at the reader index with its CRLF, nil while it is incomplete.
    private mutating func lineLength(_ input: ByteBuffer) throws(Failure) -> Int? {
        let view = input.readableBytesView
        guard let newline = view.firstIndex(of: UInt8(ascii: "\n")) else {
            if view.count > Self.maximumLineSize { throw fail("a chunk or trailer line over 8 KiB") }
            return nil
        }
        let length = newline - view.startIndex + 1
        guard length >= 2, view[newline - 1] == UInt8(ascii: "\r") else { throw fail("a line not ending in CRLF") }
        guard length <= Self.maximumLineSize else { throw fail("a chunk or trailer line over 8 KiB") }
        return length
    }

    /// The length of the head at the reader index up to and with its empty line, nil while it
    /// is incomplete.
    static func headLength(_ buffer: ByteBuffer) -> Int? {
        buffer.withUnsafeReadableBytes { bytes -> Int? in
            guard bytes.count >= 4 else { return nil }
            var index = 3
            while index < bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\n") {
                    if bytes[index - 1] == UInt8(ascii: "\r"), bytes[index - 2] == UInt8(ascii: "\n"), bytes[index - 3] == UInt8(ascii: "\r") {
                        return index + 1
                    }
                    index += 1
                } else if byte == UInt8(ascii: "\r") {
                    index += 1
                } else {
                    // Neither CR nor LF: the terminator cannot end before index + 4.
                    index += 4
                }
            }
            return nil
        }
    }

    /// A chunk-size line's size (hex digits, then optional `;extensions`), nil when malformed.
    static func chunkSize(_ line: ByteBufferView) -> Int? {
        var size = 0
        var digits = 0
        var index = line.startIndex
        while index < line.endIndex, let value = HTTPBytes.hexValue(line[index]) {
            size = size << 4 | value
            digits += 1
            index += 1
        }
        guard digits > 0, digits <= 15 else { return nil }
        if index == line.endIndex { return size }
        // Extensions: `;` after optional whitespace, and no control characters in the rest.
        while index < line.endIndex, line[index] == UInt8(ascii: " ") || line[index] == UInt8(ascii: "\t") { index += 1 }
        guard index < line.endIndex, line[index] == UInt8(ascii: ";") else { return nil }
        guard line[index...].allSatisfy(HTTPBytes.isFieldValueByte) else { return nil }
        return size
    }
}

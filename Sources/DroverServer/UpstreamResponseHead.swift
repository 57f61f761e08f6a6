import NIOCore
public import NIOHTTP1

/// A session's response head as it came (``UpstreamResponseFramer``), read only as far as a
/// proxy needs: the status, where each field is, how the body is framed, and whether the session
/// keeps its connection. ``forwarded(sessionPath:connection:)`` gives the head the client gets.
public struct UpstreamResponseHead: Sendable {
    /// How the body after this head ends.
    enum Framing: Equatable, Sendable {
        /// No body (an answer to `HEAD`, 1xx, 204, 304).
        case none
        /// `101 Switching Protocols`: the connection stops being HTTP.
        case switched
        case length(Int)
        case chunked
        /// The body runs until the session closes the connection.
        case untilClose
    }

    /// What a field is to the proxy.
    enum FieldKind: UInt8, Sendable {
        case plain
        /// Hop-by-hop (RFC 9110 section 7.6.1): never passed on.
        case hopByHop
        /// `Upgrade`: passed on with a 101 only.
        case upgrade
        case transferEncoding
        /// `Content-Length`: frames the answer, so it is passed on even when `Connection` names it.
        case contentLength
        case setCookie
    }

    /// One field line: byte offsets in ``bytes``.
    struct Field: Sendable {
        var start: Int
        var nameEnd: Int
        var valueStart: Int
        var valueEnd: Int
        /// After the line's CRLF.
        var end: Int
        var kind: FieldKind
    }

    public let status: Int
    /// The `x` of `HTTP/1.x`.
    public let minorVersion: Int
    /// The head's bytes, status line to the empty line.
    let bytes: ByteBuffer
    /// Where the status line ends (after its CRLF).
    let statusLineEnd: Int
    let fields: [Field]
    let framing: Framing
    /// Whether the session keeps the connection open after this response.
    let sessionKeepsConnection: Bool
    /// Chunks are passed as their data alone (an HTTP/1.0 client): `Transfer-Encoding` goes.
    let dechunked: Bool

    /// A 1xx other than 101: another head follows.
    public var isInformational: Bool { status >= 100 && status < 200 && status != 101 }

    /// Whether the client's connection must close after this response: its body ends only when
    /// the connection does.
    var closesClientConnection: Bool {
        framing == .untilClose || (dechunked && framing == .chunked)
    }

    public var responseStatus: HTTPResponseStatus { HTTPResponseStatus(statusCode: status) }

    /// The fields as `HTTPHeaders`, for tests and diagnostics (not the proxy's path).
    public var headers: HTTPHeaders {
        HTTPHeaders(fields.map { (text($0.start..<$0.nameEnd), text($0.valueStart..<$0.valueEnd)) })
    }

    private func text(_ range: Range<Int>) -> String {
        bytes.getString(at: bytes.readerIndex + range.lowerBound, length: range.count) ?? ""
    }

    /// Parses a head from the status line through its empty line.
    /// - Parameters:
    ///   - isHEAD: it answers a `HEAD` request (so it has no body).
    ///   - dechunk: the client cannot read chunks (HTTP/1.0).
    init(parsing bytes: ByteBuffer, isHEAD: Bool, dechunk: Bool) throws(UpstreamResponseFramer.Failure) {
        self.bytes = bytes
        let parsed = try bytes.withUnsafeReadableBytes { raw throws(UpstreamResponseFramer.Failure) in
            try Self.parse(raw, isHEAD: isHEAD)
        }
        status = parsed.status
        minorVersion = parsed.minor
        statusLineEnd = parsed.statusLineEnd
        fields = parsed.fields
        framing = parsed.framing
        sessionKeepsConnection = parsed.keepsConnection
        dechunked = dechunk && parsed.framing == .chunked
    }

    private static func failure(_ reason: String) -> UpstreamResponseFramer.Failure {
        UpstreamResponseFramer.Failure(description: reason)
    }

    private static func parse(_ raw: UnsafeRawBufferPointer, isHEAD: Bool) throws(UpstreamResponseFramer.Failure)
        -> (status: Int, minor: Int, statusLineEnd: Int, fields: [Field], framing: Framing, keepsConnection: Bool) {
        // Status line: HTTP/1.x SP 3DIGIT [SP reason] CRLF.
        guard raw.count >= 14, raw[0] == UInt8(ascii: "H"), raw[1] == UInt8(ascii: "T"), raw[2] == UInt8(ascii: "T"),
              raw[3] == UInt8(ascii: "P"), raw[4] == UInt8(ascii: "/"), raw[5] == UInt8(ascii: "1"), raw[6] == UInt8(ascii: "."), raw[7] == UInt8(ascii: "0") || raw[7] == UInt8(ascii: "1"),
              raw[8] == UInt8(ascii: " "), HTTPBytes.isDigit(raw[9]), HTTPBytes.isDigit(raw[10]), HTTPBytes.isDigit(raw[11]), raw[9] != UInt8(ascii: "0")
        else { throw failure("a malformed status line") }
        let minor = Int(raw[7] - UInt8(ascii: "0"))
        let status = Int(raw[9] - 48) * 100 + Int(raw[10] - 48) * 10 + Int(raw[11] - 48)
        var index = 12
        if raw[index] == UInt8(ascii: " ") {
            index += 1
            while index < raw.count, HTTPBytes.isFieldValueByte(raw[index]) { index += 1 }
        }
        guard index + 1 < raw.count, raw[index] == UInt8(ascii: "\r"), raw[index + 1] == UInt8(ascii: "\n") else {
            throw failure("a malformed status line")
        }
        let statusLineEnd = index + 2

        var fields: [Field] = []
        fields.reserveCapacity(12)
        var contentLength: Int?
        var transferCodings = 0
        var chunkedLast = false
        var chunkedEarlier = false
        var closeToken = false
        var keepAliveToken = false
        var named: [[UInt8]] = []
        index = statusLineEnd
        while true {
            guard index + 1 < raw.count else { throw failure("a malformed response head") }
            if raw[index] == UInt8(ascii: "\r"), raw[index + 1] == UInt8(ascii: "\n") { break }
            guard let field = fieldLine(raw, from: index) else { throw failure("a malformed header line") }
            var kind = FieldKind.plain
            let name = UnsafeRawBufferPointer(rebasing: raw[field.start..<field.nameEnd])
            let value = UnsafeRawBufferPointer(rebasing: raw[field.valueStart..<field.valueEnd])
            if equals(name, "content-length") {
                guard let length = contentLengthValue(value), contentLength == nil else {
                    throw failure("an invalid or repeated Content-Length")
                }
                contentLength = length
                kind = .contentLength
            } else if equals(name, "transfer-encoding") {
                kind = .transferEncoding
                for coding in tokens(value) {
                    transferCodings += 1
                    if chunkedLast { chunkedEarlier = true }
                    chunkedLast = equals(coding, "chunked")
                }
            } else if equals(name, "connection") {
                kind = .hopByHop
                for token in tokens(value) {
                    if equals(token, "close") { closeToken = true } else if equals(token, "keep-alive") { keepAliveToken = true }
                    named.append(token.map { $0 | (HTTPBytes.isUpper($0) ? 0x20 : 0) })
                }
            } else if equals(name, "upgrade") {
                kind = .upgrade
            } else if equals(name, "set-cookie") {
                kind = .setCookie
            } else if isFixedHopByHop(name) {
                kind = .hopByHop
            }
            fields.append(Field(start: field.start, nameEnd: field.nameEnd, valueStart: field.valueStart, valueEnd: field.valueEnd,
                                end: field.end, kind: kind))
            index = field.end
        }
        guard index + 2 == raw.count else { throw failure("a malformed response head") }
        // Fields a `Connection` header names are hop-by-hop too.
        if !named.isEmpty {
            for position in fields.indices where fields[position].kind == .plain || fields[position].kind == .setCookie {
                let name = UnsafeRawBufferPointer(rebasing: raw[fields[position].start..<fields[position].nameEnd])
                if named.contains(where: { equals(name, $0) }) { fields[position].kind = .hopByHop }
            }
        }

        let framing: Framing
        if status < 200 {
            framing = status == 101 ? .switched : .none
        } else if isHEAD || status == 204 || status == 304 {
            framing = .none
        } else if transferCodings > 0 {
            guard minor == 1 else { throw failure("Transfer-Encoding in an HTTP/1.0 response") }
            guard contentLength == nil else { throw failure("both Content-Length and Transfer-Encoding") }
            guard !chunkedEarlier else { throw failure("chunked that is not the last transfer coding") }
            framing = chunkedLast ? .chunked : .untilClose
        } else if let contentLength {
            framing = .length(contentLength)
        } else {
            framing = .untilClose
        }
        let keepsConnection = minor == 1 ? !closeToken : keepAliveToken && !closeToken
        return (status, minor, statusLineEnd, fields, framing, keepsConnection)
    }

    // MARK: the head the client gets

    /// The head as it goes to the client: hop-by-hop fields removed (a 101 keeps its `Upgrade`,
    /// with `Connection: Upgrade`), `Transfer-Encoding` removed when the chunks' data alone is
    /// passed on, each `Set-Cookie` confined to the session (``ForwardedResponse/confine(_:to:)``)
    /// when `sessionPath` is known, and `Connection: <connection>` when given (not with a 101).
    ///
    /// Most heads need none of it and go on as the very bytes that came. (`sessionPath` is
    /// worked out only for a head that sets cookies.)
    func forwarded(sessionPath findSessionPath: @autoclosure () -> String?, connection: StaticString?) -> ByteBuffer {
        let hasCookies = fields.contains { $0.kind == .setCookie }
        let sessionPath = hasCookies ? findSessionPath() : nil
        let switching = framing == .switched
        let rewrite = connection != nil || dechunked || fields.contains { field in
            switch field.kind {
            case .plain, .transferEncoding, .contentLength: false
            case .hopByHop, .upgrade: true
            case .setCookie: sessionPath != nil
            }
        }
        guard rewrite else { return bytes }
        var out = ByteBufferAllocator().buffer(capacity: bytes.readableBytes + 32)
        let base = bytes.readerIndex
        out.writeImmutableBuffer(bytes.getSlice(at: base, length: statusLineEnd)!)
        var upgrade = false
        for field in fields {
            switch field.kind {
            case .hopByHop:
                continue
            case .upgrade:
                guard switching else { continue }
                upgrade = true
            case .transferEncoding:
                if dechunked { continue }
            case .setCookie:
                if let sessionPath {
                    if let confined = ForwardedResponse.confine(text(field.valueStart..<field.valueEnd), to: sessionPath) {
                        out.writeString("Set-Cookie: \(confined)\r\n")
                    }
                    continue
                }
            case .plain, .contentLength:
                break
            }
            out.writeImmutableBuffer(bytes.getSlice(at: base + field.start, length: field.end - field.start)!)
        }
        if upgrade { out.writeStaticString("Connection: Upgrade\r\n") }
        if let connection, !switching {
            out.writeStaticString("Connection: ")
            out.writeStaticString(connection)
            out.writeStaticString("\r\n")
        }
        out.writeStaticString("\r\n")
        return out
    }

    // MARK: bytes

    /// The field line at `start`: `name ":" OWS value OWS CRLF`, nil when malformed.
    private static func fieldLine(_ raw: UnsafeRawBufferPointer, from start: Int)
        -> (start: Int, nameEnd: Int, valueStart: Int, valueEnd: Int, end: Int)? {
        var index = start
        while index < raw.count, HTTPBytes.isTokenByte(raw[index]) { index += 1 }
        guard index > start, index < raw.count, raw[index] == UInt8(ascii: ":") else { return nil }
        let nameEnd = index
        index += 1
        while index < raw.count, raw[index] == UInt8(ascii: " ") || raw[index] == UInt8(ascii: "\t") { index += 1 }
        let valueStart = index
        var valueEnd = index
        while index < raw.count, HTTPBytes.isFieldValueByte(raw[index]) {
            if raw[index] != UInt8(ascii: " "), raw[index] != UInt8(ascii: "\t") { valueEnd = index + 1 }
            index += 1
        }
        guard index + 1 < raw.count, raw[index] == UInt8(ascii: "\r"), raw[index + 1] == UInt8(ascii: "\n") else { return nil }
        return (start, nameEnd, valueStart, valueEnd, index + 2)
    }

    /// Whether `line` (without its CRLF) is a well-formed field line (a trailer).
    static func isFieldLine(_ line: ByteBufferView) -> Bool {
        var bytes = Array(line)
        bytes.append(contentsOf: [UInt8(ascii: "\r"), UInt8(ascii: "\n")])
        return bytes.withUnsafeBytes { raw in fieldLine(raw, from: 0)?.end == raw.count }
    }

    /// The comma-separated tokens of a list value, whitespace around them trimmed, empty ones skipped.
    private static func tokens(_ value: UnsafeRawBufferPointer) -> [UnsafeRawBufferPointer] {
        value.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: true).compactMap { part in
            var slice = part
            while let first = slice.first, first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") { slice = slice.dropFirst() }
            while let last = slice.last, last == UInt8(ascii: " ") || last == UInt8(ascii: "\t") { slice = slice.dropLast() }
            return slice.isEmpty ? nil : UnsafeRawBufferPointer(rebasing: slice)
        }
    }

    /// A `Content-Length` value: digits alone. A list, even of one length repeated (which RFC
    /// 9110 lets a recipient take), is refused, as NIO's own parser refuses it: two readers of
    /// one answer must not disagree.
    private static func contentLengthValue(_ value: UnsafeRawBufferPointer) -> Int? {
        guard !value.isEmpty, value.count <= 18, value.allSatisfy(HTTPBytes.isDigit) else { return nil }
        return value.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
    }

    /// ``HopByHop/fixed`` or `Proxy-*`: the request side's list, read here from bytes.
    private static func isFixedHopByHop(_ name: UnsafeRawBufferPointer) -> Bool {
        (name.count >= 6 && equals(UnsafeRawBufferPointer(rebasing: name.prefix(6)), "proxy-"))
            || HopByHop.fixed.contains { equals(name, $0.utf8) }
    }

    /// Whether `name` is `lower` (ASCII, given in lower case) in any case.
    private static func equals(_ name: UnsafeRawBufferPointer, _ lower: StaticString) -> Bool {
        lower.withUTF8Buffer { equals(name, UnsafeRawBufferPointer($0)) }
    }

    private static func equals<Lower: Collection<UInt8>>(_ name: UnsafeRawBufferPointer, _ lower: Lower) -> Bool {
        name.count == lower.count && zip(name, lower).allSatisfy { $0 == $1 || (HTTPBytes.isUpper($0) && $0 | 0x20 == $1) }
    }
}

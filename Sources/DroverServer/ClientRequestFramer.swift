public import NIOCore
public import NIOHTTP1
#if canImport(Glibc)
import Glibc
#endif

/// Reads a client's requests from the bytes of its connection: each head, its body by
/// `Content-Length` or in chunks, and its end (with trailers). The mirror of
/// ``UpstreamResponseFramer`` on the client's side, and at least as strict as NIO's
/// `HTTPRequestDecoder` (llhttp, without its lenient flags) on every rule a request smuggler or a
/// slow client could use:
/// - lines end in CRLF: a bare CR or LF anywhere in a head, a chunk line or a trailer is refused;
/// - the method is one llhttp knows, the target is visible ASCII, the version 1.0 or 1.1;
/// - a field name is a token with its colon right after it; a value has no control character but
///   HTAB; a line folded onto the next (obs-fold) is refused;
/// - `Content-Length` is digits alone, once; `Transfer-Encoding` never beside it, ends in
///   `chunked` (once) for a request, and is refused in HTTP/1.0;
/// - a chunk size is hexadecimal and fits, its CRLF follows its data exactly;
/// - a head or trailer section is at most ``maximumHeadSize`` bytes.
///
/// A request that switches protocols (`Connection: upgrade` with `Upgrade`, or `CONNECT`) is the
/// last one read: after its end the framer stops, and what follows belongs to the new protocol
/// (``isStopped``; the caller takes the bytes left in its buffer).
///
/// Errors are `HTTPParserError`s, the same the decoder raised, so the connection's handler answers
/// 400 as before. A value type with no channel: ``next(_:)`` takes the bytes read so far and
/// returns the next part, or nil when it needs more bytes.
public struct ClientRequestFramer: Sendable {
    /// The longest head (request line and fields, or the trailer section) read, as NIO's decoder.
    public static let maximumHeadSize = 80 * 1024

    private enum State: Sendable {
        /// Reading a head; `scanned` bytes of it were looked at already (a slow head is not
        /// scanned again from its start at every read).
        case head(scanned: Int)
        case body(remaining: Int)
        case chunkLine
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailers(scanned: Int)
        /// After the request that switched protocols.
        case stopped
        /// After a request that closes the connection (`Connection: close`, or HTTP/1.0 without
        /// keep-alive): nothing but empty lines may follow.
        case closed
    }

    private var state = State.head(scanned: 0)
    /// The request being read switches protocols after its end.
    private var switching = false
    /// The request being read is the connection's last.
    private var closing = false

    public init() {}

    /// Whether the framer read a request that switches protocols: the bytes after it are not
    /// HTTP.
    public var isStopped: Bool {
        if case .stopped = state { return true }
        return false
    }

    /// Whether the framer is between requests (nothing of the next one read), or after the
    /// connection's last.
    public var isBetweenRequests: Bool {
        switch state {
        case .head(let scanned): scanned == 0
        case .closed: true
        default: false
        }
    }

    /// The next part of a request from `input` (consumed from its reader index), or nil when
    /// `input` holds no complete part.
    public mutating func next(_ input: inout ByteBuffer) throws(HTTPParserError) -> HTTPServerRequestPart? {
        switch state {
        case .head(var scanned):
            // Empty lines before a request line are skipped (RFC 9112 section 2.2).
            if scanned == 0, Self.skipEmptyLines(&input), input.readableBytes > 0 { return nil }
            guard let length = try Self.headLength(input, scanned: &scanned) else {
                state = .head(scanned: scanned)
                return nil
            }
            return .head(try readHead(&input, length: length))
        case .body(let remaining):
            if remaining == 0 { return finish(trailers: nil) }
            guard input.readableBytes > 0 else { return nil }
            let taken = min(remaining, input.readableBytes)
            let slice = input.readSlice(length: taken)!
            state = .body(remaining: remaining - taken)
            return .body(slice)
        case .chunkLine:
            guard let size = try readChunkLine(&input) else { return nil }
            if size == 0 {
                state = .trailers(scanned: 0)
                return try next(&input)
            }
            state = .chunkData(remaining: size)
            return try next(&input)
        case .chunkData(let remaining):
            guard input.readableBytes > 0 else { return nil }
            let taken = min(remaining, input.readableBytes)
            let slice = input.readSlice(length: taken)!
            state = taken == remaining ? .chunkDataEnd : .chunkData(remaining: remaining - taken)
            return .body(slice)
        case .chunkDataEnd:
            guard input.readableBytes >= 2 else { return nil }
            guard input.readInteger(as: UInt8.self) == Self.cr, input.readInteger(as: UInt8.self) == Self.lf else {
                throw .invalidChunkSize
            }
            state = .chunkLine
            return try next(&input)
        case .trailers(var scanned):
            guard let length = try Self.headLength(input, scanned: &scanned) else {
                state = .trailers(scanned: scanned)
                return nil
            }
            if length == 2 {
                input.moveReaderIndex(forwardBy: 2)
                return finish(trailers: nil)
            }
            let trailers = try input.withUnsafeReadableBytes { raw throws(HTTPParserError) in
                // A trailer may not frame the message (RFC 9110 section 6.5.1): llhttp refuses a
                // `Content-Length` or `Transfer-Encoding` there, and so does this framer, rather
                // than pass it on to a session that might act on it (found by FuzzRequest).
                try Self.fields(UnsafeRawBufferPointer(rebasing: raw[0..<length]), from: 0) { name, _ throws(HTTPParserError) in
                    if name.count == 14, Self.equalsLowercased(name, "content-length") { throw .unexpectedContentLength }
                    if name.count == 17, Self.equalsLowercased(name, "transfer-encoding") { throw .invalidHeaderToken }
                }
            }
            input.moveReaderIndex(forwardBy: length)
            return finish(trailers: trailers)
        case .stopped:
            return nil
        case .closed:
            guard Self.skipEmptyLines(&input) else { throw .closedConnection }
            return nil
        }
    }

    /// Skips the empty lines (CRLF) at the start of `input`, and says whether nothing else is
    /// there yet: nothing at all, or a lone CR that may begin another.
    private static func skipEmptyLines(_ input: inout ByteBuffer) -> Bool {
        while input.readableBytes >= 2, input.getInteger(at: input.readerIndex, as: UInt16.self) == crlf {
            input.moveReaderIndex(forwardBy: 2)
        }
        return input.readableBytes == 0 || (input.readableBytes == 1 && input.getInteger(at: input.readerIndex, as: UInt8.self) == cr)
    }

    private mutating func finish(trailers: HTTPHeaders?) -> HTTPServerRequestPart {
        state = switching ? .stopped : closing ? .closed : .head(scanned: 0)
        switching = false
        return .end(trailers)
    }

    // MARK: heads

    // Computed, so that the hot path reads no lazily initialised static.
    static var cr: UInt8 { 13 }
    static var lf: UInt8 { 10 }
    static var space: UInt8 { 32 }
    static var tab: UInt8 { 9 }
    static var colon: UInt8 { 58 }

    /// `CRLF` read as a big-endian `UInt16`.
    static var crlf: UInt16 { 0x0d0a }

    /// The length of the head (or trailer section) at the start of `input`, through its empty
    /// line, once it is all there; nil before, with `scanned` moved on. Every LF must follow a CR,
    /// and every CR come before an LF.
    private static func headLength(_ input: ByteBuffer, scanned: inout Int) throws(HTTPParserError) -> Int? {
        let found = try input.withUnsafeReadableBytes { raw throws(HTTPParserError) -> (length: Int?, scanned: Int) in
            // From one LF to the next (a CR elsewhere is refused where the head is parsed).
            var index = scanned
            while index < raw.count, let found = memchr(raw.baseAddress! + index, Int32(lf), raw.count - index) {
                let at = raw.baseAddress!.distance(to: UnsafeRawPointer(found))
                guard at > 0, raw[at - 1] == cr else { throw HTTPParserError.lfExpected }
                // The empty line: CRLF at the very start (no field), or right after a line's CRLF.
                if at == 1 { return (2, 2) }
                if at >= 3, raw[at - 2] == lf, raw[at - 3] == cr { return (at + 1, at + 1) }
                index = at + 1
            }
            // A CR last may be the start of the next line's end: looked at again.
            return (nil, raw.count > 0 && raw[raw.count - 1] == cr ? raw.count - 1 : raw.count)
        }
        scanned = found.scanned
        guard let length = found.length else {
            if scanned > maximumHeadSize { throw .headerOverflow }
            return nil
        }
        guard length <= maximumHeadSize else { throw .headerOverflow }
        return length
    }

    private mutating func readHead(_ input: inout ByteBuffer, length: Int) throws(HTTPParserError) -> HTTPRequestHead {
        let parsed = try input.withUnsafeReadableBytes { raw throws(HTTPParserError) in
            try Self.parseHead(UnsafeRawBufferPointer(rebasing: raw[0..<length]))
        }
        input.moveReaderIndex(forwardBy: length)
        switching = parsed.switching
        closing = !parsed.head.isKeepAlive
        switch parsed.framing {
        case .length(let count):
            state = .body(remaining: count)
        case .chunked:
            state = .chunkLine
        }
        return parsed.head
    }

    private enum Framing {
        case length(Int)
        case chunked
    }

    /// The method named by `bytes`, if llhttp reads it in a request: the common ones by their
    /// bytes, the rest by name.
    private static func knownMethod(_ bytes: UnsafeRawBufferPointer) -> HTTPMethod? {
        switch bytes.count {
        case 3 where bytes[0] == UInt8(ascii: "G") && bytes[1] == UInt8(ascii: "E") && bytes[2] == UInt8(ascii: "T"): return .GET
        case 4 where equalsLowercased(bytes, "post") && bytes[0] == UInt8(ascii: "P"): return .POST
        default: break
        }
        switch String(decoding: bytes, as: UTF8.self) {
        case "DELETE": return .DELETE
        case "HEAD": return .HEAD
        case "PUT": return .PUT
        case "CONNECT": return .CONNECT
        case "OPTIONS": return .OPTIONS
        case "TRACE": return .TRACE
        case "PATCH": return .PATCH
        case "M-SEARCH": return .MSEARCH
        case let other where ["COPY", "LOCK", "MKCOL", "MOVE", "PROPFIND", "PROPPATCH", "SEARCH", "UNLOCK", "BIND", "REBIND", "UNBIND",
                              "ACL", "REPORT", "MKACTIVITY", "CHECKOUT", "MERGE", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "PURGE",
                              "MKCALENDAR", "LINK", "UNLINK", "SOURCE", "QUERY"].contains(other):
            return HTTPMethod(rawValue: other)
        default: return nil
        }
    }

    /// Whether `head` switches protocols: its end is the last the framer reads on the connection.
    /// The framer's rule, which the code that decides what to do with the request asks too (a
    /// `Connection` member is trimmed of spaces alone): were the two to disagree, a request the
    /// framer stopped after could be answered as one the connection goes on from, or the other
    /// way round.
    static func switchesProtocols(_ head: HTTPRequestHead) -> Bool {
        if head.method == .CONNECT { return true }
        guard head.headers.contains(name: "upgrade") else { return false }
        var connectionUpgrade = false
        for (name, value) in head.headers where name.utf8.count == 10 && HeaderName.equals(name, "connection") {
            var value = value
            value.withUTF8 { bytes in
                forEachListMember(UnsafeRawBufferPointer(bytes)) { token in
                    if equalsLowercased(token, "upgrade") { connectionUpgrade = true }
                }
            }
        }
        return connectionUpgrade
    }

    /// Calls `each` with every member of a comma-separated field value, without the spaces
    /// around it (empty members included). A tab is left in the member, which then names no
    /// coding: llhttp refuses `chunked<HTAB>`.
    private static func forEachListMember(_ value: UnsafeRawBufferPointer, _ each: (UnsafeRawBufferPointer) -> Void) {
        var start = 0
        while start <= value.count {
            var end = start
            while end < value.count, value[end] != UInt8(ascii: ",") { end += 1 }
            var (first, last) = (start, end)
            while first < last, value[first] == space { first += 1 }
            while last > first, value[last - 1] == space { last -= 1 }
            each(UnsafeRawBufferPointer(rebasing: value[first..<last]))
            start = end + 1
        }
    }

    /// Whether `bytes`, lowercased, are `lowercase` (ASCII).
    private static func equalsLowercased(_ bytes: UnsafeRawBufferPointer, _ lowercase: StaticString) -> Bool {
        guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
        let expected = lowercase.utf8Start
        for index in 0..<bytes.count where bytes[index] | (bytes[index] &- 65 < 26 ? 0x20 : 0) != expected[index] {
            return false
        }
        return true
    }

    private static func parseHead(_ raw: UnsafeRawBufferPointer) throws(HTTPParserError)
        -> (head: HTTPRequestHead, framing: Framing, switching: Bool) {
        // Request line: method SP request-target SP HTTP/1.x CRLF.
        var index = 0
        while index < raw.count, raw[index] != space {
            guard isUpperOrDash(raw[index]) else { throw .invalidMethod }
            index += 1
        }
        guard index > 0, index < raw.count, let method = knownMethod(UnsafeRawBufferPointer(rebasing: raw[0..<index])) else {
            throw .invalidMethod
        }
        index += 1
        let targetStart = index
        while index < raw.count, raw[index] != space {
            guard raw[index] > 0x20, raw[index] < 0x7f else { throw .invalidURL }
            index += 1
        }
        guard index > targetStart, index < raw.count,
              isTargetForm(UnsafeRawBufferPointer(rebasing: raw[targetStart..<index]), connect: method == .CONNECT) else { throw .invalidURL }
        let target = String(decoding: UnsafeRawBufferPointer(rebasing: raw[targetStart..<index]), as: UTF8.self)
        index += 1
        guard index + 10 <= raw.count, raw[index] == UInt8(ascii: "H"), raw[index + 1] == UInt8(ascii: "T"),
              raw[index + 2] == UInt8(ascii: "T"), raw[index + 3] == UInt8(ascii: "P"), raw[index + 4] == UInt8(ascii: "/"),
              raw[index + 5] == UInt8(ascii: "1"), raw[index + 6] == UInt8(ascii: "."),
              raw[index + 7] == UInt8(ascii: "0") || raw[index + 7] == UInt8(ascii: "1"),
              raw[index + 8] == cr, raw[index + 9] == lf
        else { throw .invalidVersion }
        let minor = Int(raw[index + 7] - UInt8(ascii: "0"))
        var contentLength: Int?
        var transferEncoding = false
        var chunkedLast = false
        var chunkedCount = 0
        var upgradeField = false
        let headers = try fields(raw, from: index + 10) { name, value throws(HTTPParserError) in
            // Only the fields that frame the request or switch protocols are looked at, by their
            // bytes (names are case-insensitive).
            switch name.count {
            case 14 where equalsLowercased(name, "content-length"):
                guard contentLength == nil, let length = decimal(value) else { throw .unexpectedContentLength }
                contentLength = length
            case 17 where equalsLowercased(name, "transfer-encoding"):
                // Tokens compared as ASCII bytes, as every other reader of the request does: a
                // Unicode comparison would take `chun\u{212A}ed` (KELVIN SIGN) for `chunked`.
                transferEncoding = true
                forEachListMember(value) { coding in
                    chunkedLast = equalsLowercased(coding, "chunked")
                    if chunkedLast { chunkedCount += 1 }
                }
            case 7 where equalsLowercased(name, "upgrade"):
                upgradeField = true
            default:
                break
            }
        }
        // A CONNECT has no body: llhttp takes what follows its head for the tunnel. One that
        // frames a body would be read two ways (a body here, a next request by a session that
        // follows RFC 9110 section 9.3.6): refused.
        if method == .CONNECT, transferEncoding || (contentLength ?? 0) > 0 { throw .unexpectedContentLength }
        let framing: Framing
        if transferEncoding {
            // A request whose length cannot be known, or that two framings describe, is a
            // smuggler's: refused (RFC 9112 section 6.1).
            guard contentLength == nil else { throw .unexpectedContentLength }
            guard minor == 1, chunkedLast, chunkedCount == 1 else { throw .unexpectedContentLength }
            framing = .chunked
        } else {
            framing = .length(contentLength ?? 0)
        }
        let head = HTTPRequestHead(version: HTTPVersion(major: 1, minor: minor), method: method, uri: target, headers: headers)
        // Whether it switches is the one rule the rest of the node asks too; only a request with
        // `Upgrade` (or a CONNECT) needs it read.
        return (head, framing, (upgradeField || method == .CONNECT) && Self.switchesProtocols(head))
    }

    /// The field lines from `start` through the empty line that ends them; `each` sees every
    /// name and value as bytes first.
    private static func fields(_ raw: UnsafeRawBufferPointer, from start: Int,
                               _ each: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws(HTTPParserError) -> Void = { _, _ in })
        throws(HTTPParserError) -> HTTPHeaders {
        var headers = HTTPHeaders()
        headers.reserveCapacity(16)
        var index = start
        while true {
            guard index + 1 < raw.count else { throw .invalidHeaderToken }
            if raw[index] == cr, raw[index + 1] == lf { return headers }
            // A line that starts with whitespace continues the previous one (obs-fold): refused.
            let nameStart = index
            while index < raw.count, HTTPBytes.isTokenByte(raw[index]) { index += 1 }
            guard index > nameStart, index < raw.count, raw[index] == colon else { throw .invalidHeaderToken }
            let nameEnd = index
            index += 1
            while index < raw.count, raw[index] == space || raw[index] == tab { index += 1 }
            // The value keeps its trailing whitespace, as the decoder's did.
            let valueStart = index
            while index < raw.count, raw[index] != cr {
                let byte = raw[index]
                guard HTTPBytes.isFieldValueByte(byte) else { throw .invalidHeaderToken }
                index += 1
            }
            guard index + 1 < raw.count, raw[index + 1] == lf else { throw .lfExpected }
            let name = UnsafeRawBufferPointer(rebasing: raw[nameStart..<nameEnd])
            let value = UnsafeRawBufferPointer(rebasing: raw[valueStart..<index])
            try each(name, value)
            headers.add(name: String(decoding: name, as: UTF8.self), value: String(decoding: value, as: UTF8.self))
            index += 2
        }
    }

    // MARK: chunks

    /// Reads a chunk line (size, extensions, CRLF) at the start of `input` once it is all there,
    /// and returns the size.
    private func readChunkLine(_ input: inout ByteBuffer) throws(HTTPParserError) -> Int? {
        let found = try input.withUnsafeReadableBytes { raw throws(HTTPParserError) -> (size: Int, length: Int)? in
            var index = 0
            var size = 0
            while index < raw.count, let digit = HTTPBytes.hexValue(raw[index]) {
                let (shifted, overflow) = size.multipliedReportingOverflow(by: 16)
                guard !overflow, shifted <= Int.max - digit else { throw HTTPParserError.invalidChunkSize }
                size = shifted + digit
                index += 1
            }
            // At most 16 hex digits, leading zeros included, however the line arrives: a rule
            // that only a partial line met would read the same bytes two ways (FuzzRequest).
            guard index <= 16 else { throw HTTPParserError.invalidChunkSize }
            guard index < raw.count else { return nil }
            guard index > 0 else { throw HTTPParserError.invalidChunkSize }
            // Extensions, ignored: `;name` or `;name=value`, the value a token or a quoted string
            // (RFC 9112 section 7.1.1), with no whitespace around them; then CRLF.
            while index < raw.count, raw[index] == UInt8(ascii: ";") {
                index += 1
                let nameStart = index
                while index < raw.count, HTTPBytes.isTokenByte(raw[index]) { index += 1 }
                guard index > nameStart || index == raw.count else { throw HTTPParserError.invalidChunkSize }
                guard index < raw.count, raw[index] == UInt8(ascii: "=") else { continue }
                index += 1
                if index < raw.count, raw[index] == UInt8(ascii: "\"") {
                    index += 1
                    var closed = false
                    while index < raw.count {
                        let byte = raw[index]
                        if byte == UInt8(ascii: "\"") {
                            closed = true
                            index += 1
                            break
                        }
                        guard HTTPBytes.isFieldValueByte(byte) else { throw HTTPParserError.invalidChunkSize }
                        // A quoted pair: the next byte is taken as it is, but it is no control
                        // either (a bare LF or CR after `\` would end the line for a reader
                        // before Drover).
                        if byte == UInt8(ascii: "\\") {
                            index += 1
                            guard index >= raw.count || HTTPBytes.isFieldValueByte(raw[index]) else { throw HTTPParserError.invalidChunkSize }
                        }
                        index += 1
                    }
                    guard closed || index >= raw.count else { throw HTTPParserError.invalidChunkSize }
                } else {
                    let valueStart = index
                    while index < raw.count, HTTPBytes.isTokenByte(raw[index]) { index += 1 }
                    guard index > valueStart || index == raw.count else { throw HTTPParserError.invalidChunkSize }
                }
            }
            guard index + 1 < raw.count else {
                guard index <= 4096 else { throw HTTPParserError.invalidChunkSize }
                return nil
            }
            guard raw[index] == Self.cr, raw[index + 1] == Self.lf else { throw HTTPParserError.invalidChunkSize }
            return (size, index + 2)
        }
        guard let found else { return nil }
        input.moveReaderIndex(forwardBy: found.length)
        return found.size
    }

    // MARK: bytes

    /// An origin-form (`/path?query`), asterisk-form (`*`) or absolute-form (`scheme://…`)
    /// request target (RFC 9112 section 3.2).
    private static func isTargetForm(_ target: UnsafeRawBufferPointer, connect: Bool) -> Bool {
        if target[0] == UInt8(ascii: "/") { return true }
        if target.count == 1, target[0] == UInt8(ascii: "*") { return true }
        // A host (absolute-form, or CONNECT's authority-form) has none of the delimiters that
        // are not allowed in a URI (RFC 3986 section 2).
        guard !target.contains(where: notInAuthority) else { return false }
        if connect { return true }
        var index = 0
        while index < target.count, isAlpha(target[index]) || (index > 0 && (HTTPBytes.isDigit(target[index]) || target[index] == UInt8(ascii: "+")
                                                                                || target[index] == UInt8(ascii: "-") || target[index] == UInt8(ascii: "."))) {
            index += 1
        }
        return index > 0 && index + 3 <= target.count && target[index] == colon && target[index + 1] == UInt8(ascii: "/")
            && target[index + 2] == UInt8(ascii: "/")
    }

    private static func notInAuthority(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "#"), UInt8(ascii: "<"), UInt8(ascii: ">"), UInt8(ascii: "\\"), UInt8(ascii: "^"),
             UInt8(ascii: "`"), UInt8(ascii: "{"), UInt8(ascii: "|"), UInt8(ascii: "}"):
            return true
        default:
            return false
        }
    }

    private static func isAlpha(_ byte: UInt8) -> Bool {
        (byte | 0x20) >= UInt8(ascii: "a") && (byte | 0x20) <= UInt8(ascii: "z")
    }


    private static func isUpperOrDash(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z")) || byte == UInt8(ascii: "-")
    }



    /// Digits alone, that fit.
    private static func decimal(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard !bytes.isEmpty else { return nil }
        var value = 0
        for byte in bytes {
            guard HTTPBytes.isDigit(byte) else { return nil }
            let (shifted, overflow) = value.multipliedReportingOverflow(by: 10)
            guard !overflow, shifted <= Int.max - Int(byte - UInt8(ascii: "0")) else { return nil }
            value = shifted + Int(byte - UInt8(ascii: "0"))
        }
        return value
    }
}

import DroverCluster
import DroverKernel
public import NIOCore
public import NIOHTTP1

/// A request with its whole (bounded) body, for the server's own endpoints.
public struct HTTPRequest: Sendable {
    public var head: HTTPRequestHead
    public var body: ByteBuffer
    /// The peer's address, for endpoints restricted to loopback and cluster nodes.
    public var remoteAddress: SocketAddress?

    /// The path without the query string.
    public var path: Substring {
        head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
    }
}

/// A complete response.
public struct HTTPResponse: Sendable {
    public var status: HTTPResponseStatus
    public var headers: HTTPHeaders
    public var body: ByteBuffer

    public init(status: HTTPResponseStatus, headers: HTTPHeaders = [:], body: ByteBuffer = ByteBuffer()) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// A `text/plain` response.
    public static func text(_ status: HTTPResponseStatus, _ text: String, headers: HTTPHeaders = [:]) -> HTTPResponse {
        var all = headers
        all.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        return HTTPResponse(status: status, headers: all, body: ByteBuffer(string: text))
    }

    /// A failed session operation as text (``sessionFailure(_:)``), after `prefix`.
    static func failure(_ error: any Error, prefix: String = "") -> HTTPResponse {
        let (status, headers) = sessionFailure(error)
        return .text(status, prefix + "\(error)\n", headers: headers)
    }
}

/// The status of a failed operation (``CodedError/httpStatus``), with `Retry-After` where a
/// retry may succeed; a cancelled one is 503 (the node is stopping), anything else 500.
func sessionFailure(_ error: any Error) -> (HTTPResponseStatus, HTTPHeaders) {
    let coded = error as? any CodedError
    let status = coded?.httpStatus ?? (error is CancellationError ? 503 : 500)
    let retry = coded.map(\.retryAfterSeconds) ?? (error is CancellationError ? 5 : nil)
    guard let retry else { return (HTTPResponseStatus(statusCode: status), [:]) }
    return (HTTPResponseStatus(statusCode: status), ["Retry-After": String(retry)])
}

/// Answers requests for the server's own endpoints.
public protocol HTTPResponder: Sendable {
    /// The answer to a request that needs no work (the health check), given at once on the
    /// connection's event loop; nil sends the request to ``respond(to:)``.
    func immediateResponse(to head: HTTPRequestHead) -> HTTPResponse?
    func respond(to request: HTTPRequest) async -> HTTPResponse
}

extension HTTPResponder {
    public func immediateResponse(to head: HTTPRequestHead) -> HTTPResponse? { nil }
}

extension HTTPResponseHead {
    /// The head as HTTP/1 bytes with `body` after it, in one buffer (one write). The head must
    /// frame the body itself (the node's own responses carry `Content-Length`). A field whose
    /// name or value could end the line early (CR, LF, NUL) is left out: it would let a value
    /// an endpoint copied from a request split the response.
    func serialized(body: ByteBuffer) -> ByteBuffer {
        var out = ByteBufferAllocator().buffer(capacity: 64 + headers.count * 40 + body.readableBytes)
        out.writeString("HTTP/\(version.major).\(version.minor) \(status.code) \(status.reasonPhrase)\r\n")
        out.writeFields(headers) { Self.isSafe($0) && Self.isSafe($1) }
        out.writeImmutableBuffer(body)
        return out
    }

    private static func isSafe(_ text: String) -> Bool {
        !text.utf8.contains { $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\n") || $0 == 0 }
    }
}

extension HTTPRequestHead {
    /// The head as HTTP/1 bytes: request line, fields, empty line. The fields are the client's,
    /// which the request decoder has validated, and the proxy's own.
    func serialized() -> ByteBuffer {
        var out = ByteBufferAllocator().buffer(capacity: 64 + uri.utf8.count + headers.count * 48)
        out.writeString(method.rawValue)
        out.writeStaticString(" ")
        out.writeString(uri)
        out.writeString(" HTTP/\(version.major).\(version.minor)\r\n")
        out.writeFields(headers)
        return out
    }
}

extension ByteBuffer {
    /// `name: value` lines for the fields `include` accepts, then the empty line that ends a
    /// head (or a chunked body's trailers).
    mutating func writeFields(_ fields: HTTPHeaders, where include: (String, String) -> Bool = { _, _ in true }) {
        for (name, value) in fields where include(name, value) {
            writeString(name)
            writeStaticString(": ")
            writeString(value)
            writeStaticString("\r\n")
        }
        writeStaticString("\r\n")
    }
}

/// How a forwarded request's body goes on. The request decoder hands the body on as data, so a
/// body the head calls chunked is chunked again; any other body (`Content-Length`) goes as it is.
enum RequestBodyFraming {
    case asItIs
    case chunked

    init(_ head: HTTPRequestHead) {
        let chunked = head.headers[canonicalForm: "transfer-encoding"].last.map { HeaderName.equals(String($0), "chunked") } ?? false
        self = chunked ? .chunked : .asItIs
    }

    /// The bytes of one piece of the body.
    func body(_ data: ByteBuffer) -> ByteBuffer {
        guard case .chunked = self, data.readableBytes > 0 else { return data }
        var out = ByteBufferAllocator().buffer(capacity: data.readableBytes + 12)
        out.writeString(String(data.readableBytes, radix: 16))
        out.writeStaticString("\r\n")
        out.writeImmutableBuffer(data)
        out.writeStaticString("\r\n")
        return out
    }

    /// The bytes that end the body (with `trailers` when chunked), nil when there are none.
    func end(_ trailers: HTTPHeaders?) -> ByteBuffer? {
        guard case .chunked = self else { return nil }
        var out = ByteBufferAllocator().buffer(capacity: 5)
        out.writeStaticString("0\r\n")
        out.writeFields(trailers ?? [:])
        return out
    }
}

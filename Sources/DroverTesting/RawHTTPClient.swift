import DroverKernel
public import Foundation
import Synchronization

/// A minimal HTTP/1.1 client over a POSIX socket. It can bind its own end to a chosen loopback
/// address, which address-restricted endpoints are tested with.
///
/// Its socket I/O blocks, so every public call runs it on a thread of its own
/// (``onOwnThread(_:)``): awaiting a slow server never holds one of the cooperative pool's
/// threads (two on this machine), which the product's own timers and the other suites need.
public enum RawHTTPClient {
    public struct Response: Sendable {
        public var status: Int
        public var headers: [(String, String)]
        public var body: String

        public func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }
    }

    /// Sends one request with `Connection: close` and reads the whole answer.
    /// - Parameters:
    ///   - localAddress: the source address to bind, e.g. `127.0.0.9`.
    ///   - networkNamespace: a network namespace to send it from (`/run/netns/x`, see
    ///     ``NetworkLab``); nil: the machine's own.
    ///   - timeout: how long a silent server is waited for before the test fails. Thirty seconds
    ///     by default: a safety net against a hang, not a measure (a proof run saw a light test's
    ///     request wait past ten seconds while the whole suite started at once on two cores);
    ///     a test whose point is an answer's timing passes its own.
    public static func request(_ method: String = "GET", host: String, port: Int, path: String,
                               headers: [(String, String)] = [], body: String = "", localAddress: String? = nil,
                               timeout: TimeInterval = 30, networkNamespace: String? = nil) async throws -> Response {
        try await onOwnThread {
            try NetworkLab.within(networkNamespace) {
                try blockingRequest(method, host: host, port: port, path: path, headers: headers, body: body,
                                    localAddress: localAddress, timeout: timeout)
            }
        }
    }

    static func blockingRequest(_ method: String, host: String, port: Int, path: String, headers: [(String, String)],
                                body: String, localAddress: String?, timeout: TimeInterval) throws -> Response {
        let fd = try connectedSocket(host: host, port: port, localAddress: localAddress, timeout: timeout)
        defer { close(fd) }
        // A `Host` among `headers` replaces the connection's own (tests of what a node answers to).
        let hostHeader = headers.contains { $0.0.lowercased() == "host" } ? "" : "Host: \(host):\(port)\r\n"
        var request = "\(method) \(path) HTTP/1.1\r\n\(hostHeader)Connection: close\r\n"
        for (name, value) in headers { request += "\(name): \(value)\r\n" }
        if !body.isEmpty || method == "POST" || method == "PUT" { request += "Content-Length: \(body.utf8.count)\r\n" }
        request += "\r\n" + body
        try sendAll(fd, Array(request.utf8))
        return try parse(try receiveAll(fd, answerTo: method))
    }

    /// Sends `raw` bytes as they are, shuts down the sending side (a half-close), and returns
    /// everything the server sends until it closes the connection.
    public static func halfClosedExchange(host: String, port: Int, raw: String, timeout: TimeInterval = 30) async throws -> String {
        try await onOwnThread {
            let fd = try connectedSocket(host: host, port: port, localAddress: nil, timeout: timeout)
            defer { close(fd) }
            try sendAll(fd, Array(raw.utf8))
            shutdown(fd, Int32(SHUT_WR))
            return String(decoding: try receiveAll(fd), as: UTF8.self)
        }
    }

    /// Sends `raw` bytes as they are and returns everything the server sends until it closes
    /// the connection; a server that keeps it open past `timeout` is an error.
    public static func exchange(host: String, port: Int, raw: String, timeout: TimeInterval) async throws -> String {
        try await onOwnThread {
            let fd = try connectedSocket(host: host, port: port, localAddress: nil, timeout: timeout)
            defer { close(fd) }
            try sendAll(fd, Array(raw.utf8))
            return String(decoding: try receiveAll(fd), as: UTF8.self)
        }
    }

    static func sendAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw TestFailure("send: \(String(cString: strerror(errno)))") }
            sent += n
        }
    }

    /// One read: what arrived, or an error when the server closed or the timeout passed.
    static func receive(_ fd: Int32) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { throw TestFailure(n == 0 ? "the server closed the connection" : "recv: \(String(cString: strerror(errno)))") }
        return Array(buffer[0..<n])
    }

    /// Where `needle` first starts in `haystack`.
    static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for index in 0...(haystack.count - needle.count) where Array(haystack[index..<(index + needle.count)]) == needle { return index }
        return nil
    }

    /// Reads until the server closes; a timeout is an error. With `answerTo` (the request's
    /// method), also stops at the end of an answer that carries a Content-Length: some servers
    /// (chromedriver) keep the connection open after `Connection: close`.
    static func receiveAll(_ fd: Int32, answerTo method: String? = nil) throws -> [UInt8] {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { break }
            guard n > 0 else { throw TestFailure("recv: \(String(cString: strerror(errno)))") }
            received.append(contentsOf: buffer[0..<n])
            if let method, let end = find(Array("\r\n\r\n".utf8), in: received),
               let length = try parse(Array(received[..<(end + 4)])).header("Content-Length").flatMap(Int.init),
               received.count >= end + 4 + (method == "HEAD" ? 0 : length) {
                break
            }
        }
        return received
    }

    /// A blocking TCP connection to `host:port`, with send and receive timeouts, optionally
    /// from a chosen local address. The caller closes it.
    static func connectedSocket(host: String, port: Int, localAddress: String?, timeout: TimeInterval) throws -> Int32 {
        let fd: Int32
        if let localAddress {
            fd = try IPv4Socket.bound(localAddress).fd
        } else {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
        }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        guard IPv4Socket.connect(fd, to: host, port: port) == 0 else {
            close(fd)
            throw TestFailure("connect \(host):\(port): \(String(cString: strerror(errno)))")
        }
        return fd
    }

    /// One keep-alive connection: requests go one after another on it, each answer read by its
    /// Content-Length (the answers must carry one).
    public final class KeepAlive: Sendable {
        let fd: Int32
        let host: String
        let port: Int
        /// Bytes read past the last answer; one request at a time uses them.
        private let pending = Mutex<[UInt8]>([])

        public init(host: String, port: Int, timeout: TimeInterval = 30) async throws {
            fd = try await onOwnThread { try RawHTTPClient.connectedSocket(host: host, port: port, localAddress: nil, timeout: timeout) }
            self.host = host
            self.port = port
        }

        deinit { close(fd) }

        public func request(_ method: String = "GET", path: String) async throws -> Response {
            try await onOwnThread { try self.blockingRequest(method, path: path) }
        }

        /// How the server ended the connection: `"closed"` (an orderly FIN), `"reset"`, or
        /// `"open"` if it is still open after the socket's timeout.
        public func end() async -> String {
            let ended = try? await onOwnThread { () -> String in
                var byte: UInt8 = 0
                while true {
                    let count = recv(self.fd, &byte, 1, 0)
                    if count == 0 { return "closed" }
                    if count < 0, errno != EINTR { return errno == ECONNRESET ? "reset" : "open" }
                }
            }
            return ended ?? "open"
        }

        /// Sends `raw` (a whole request, as bytes) and reads one answer: its head, and its body
        /// by its Content-Length (none: no body, as after a `101`).
        public func exchange(_ raw: String) async throws -> Response {
            try await onOwnThread { try self.blockingExchange(raw) }
        }

        private func blockingRequest(_ method: String, path: String) throws -> Response {
            try blockingExchange("\(method) \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nContent-Length: 0\r\n\r\n")
        }

        private func blockingExchange(_ raw: String) throws -> Response {
            try RawHTTPClient.sendAll(fd, Array(raw.utf8))
            var buffered = pending.withLock { $0 }
            while true {
                if let end = RawHTTPClient.find(Array("\r\n\r\n".utf8), in: buffered) {
                    let head = try RawHTTPClient.parse(Array(buffered[..<(end + 4)]))
                    let length = head.header("Content-Length").flatMap(Int.init) ?? 0
                    if buffered.count >= end + 4 + length {
                        let answer = try RawHTTPClient.parse(Array(buffered[..<(end + 4 + length)]))
                        buffered.removeFirst(end + 4 + length)
                        pending.withLock { [buffered] in $0 = buffered }
                        return answer
                    }
                }
                buffered += try RawHTTPClient.receive(fd)
            }
        }
    }

    static func parse(_ bytes: [UInt8]) throws -> Response {
        let text = String(decoding: bytes, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { throw TestFailure("no complete response: \(text)") }
        let lines = text[..<split.lowerBound].components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { throw TestFailure("bad status line \(lines[0])") }
        let headers = lines.dropFirst().compactMap { line -> (String, String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        return Response(status: status, headers: headers, body: String(text[split.upperBound...]))
    }
}


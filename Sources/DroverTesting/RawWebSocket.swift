import DroverKernel
public import Foundation

/// A minimal WebSocket client over a blocking socket (run on a thread of its own, like
/// ``RawHTTPClient``): upgrade, send one masked text frame, read the echoed frame. Enough to
/// prove a WebSocket works end to end through the proxy.
public enum RawWebSocket {
    /// Opens `path`, sends `message` and returns the text of the first frame that comes back.
    /// - Parameter networkNamespace: a ``NetworkLab`` host to connect from; nil: this machine.
    public static func echo(host: String, port: Int, path: String, headers: [(String, String)] = [], message: String,
                            timeout: TimeInterval = 30, networkNamespace: String? = nil) async throws -> String {
        try await onOwnThread {
            if let networkNamespace { try NetworkLab.enter(networkNamespace) }
            return try blockingEcho(host: host, port: port, path: path, headers: headers, message: message, timeout: timeout)
        }
    }

    /// An upgraded connection held open until ``close()``: a WebSocket the node counts as open.
    public final class Held: Sendable {
        let fd: Int32

        init(fd: Int32) {
            self.fd = fd
        }

        public func close() {
            Foundation.close(fd)
        }

        /// Sends one masked text frame (the client's; what comes back is left unread).
        public func send(_ message: String) async throws {
            try await onOwnThread { try RawHTTPClient.sendAll(self.fd, RawWebSocket.frame(message)) }
        }
    }

    /// A masked text frame, as a client sends it.
    static func frame(_ message: String) -> [UInt8] {
        let payload = Array(message.utf8)
        precondition(payload.count < 65_536, "messages under 64 KiB only")
        let mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
        let length: [UInt8] = payload.count < 126 ? [0x80 | UInt8(payload.count)] : [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xff)]
        return [0x81] + length + mask + payload.enumerated().map { $1 ^ mask[$0 % 4] }
    }

    /// Opens `path` as a WebSocket and holds it open, sending nothing.
    public static func hold(host: String, port: Int, path: String, headers: [(String, String)] = [],
                            timeout: TimeInterval = 30) async throws -> Held {
        try await onOwnThread {
            let fd = try RawHTTPClient.connectedSocket(host: host, port: port, localAddress: nil, timeout: timeout)
            do {
                _ = try upgrade(fd, host: host, port: port, path: path, headers: headers)
            } catch {
                close(fd)
                throw error
            }
            return Held(fd: fd)
        }
    }

    /// Sends the upgrade request and reads the `101` head.
    /// - Returns: the bytes read past the head.
    static func upgrade(_ fd: Int32, host: String, port: Int, path: String, headers: [(String, String)]) throws -> [UInt8] {
        let key = Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        // A `Host` among `headers` replaces the connection's own.
        let hostHeader = headers.contains { $0.0.lowercased() == "host" } ? "" : "Host: \(host):\(port)\r\n"
        var request = "GET \(path) HTTP/1.1\r\n\(hostHeader)Upgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n"
        for (name, value) in headers { request += "\(name): \(value)\r\n" }
        try RawHTTPClient.sendAll(fd, Array((request + "\r\n").utf8))
        var received: [UInt8] = []
        var headEnd: Int?
        while headEnd == nil {
            received += try RawHTTPClient.receive(fd)
            headEnd = RawHTTPClient.find(Array("\r\n\r\n".utf8), in: received)
        }
        let head = String(decoding: received[..<headEnd!], as: UTF8.self)
        guard head.hasPrefix("HTTP/1.1 101") else { throw TestFailure("no upgrade: \(head.split(separator: "\r\n").first ?? "")") }
        return Array(received[(headEnd! + 4)...])
    }

    static func blockingEcho(host: String, port: Int, path: String, headers: [(String, String)], message: String,
                             timeout: TimeInterval) throws -> String {
        let fd = try RawHTTPClient.connectedSocket(host: host, port: port, localAddress: nil, timeout: timeout)
        defer { close(fd) }
        var rest = try upgrade(fd, host: host, port: port, path: path, headers: headers)
        try RawHTTPClient.sendAll(fd, frame(message))
        while rest.count < 2 || rest.count < 2 + Int(rest[1] & 0x7f) { rest += try RawHTTPClient.receive(fd) }
        let length = Int(rest[1] & 0x7f)
        return String(decoding: rest[2..<(2 + length)], as: UTF8.self)
    }
}

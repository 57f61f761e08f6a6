import DroverKernel
public import Foundation
import Synchronization

/// A minimal WebSocket client over a blocking socket (run on a thread of its own, like
/// ``RawHTTPClient``): upgrade, send one masked text frame, read the echoed frame. Enough to
/// prove a WebSocket works end to end through the proxy.
public enum RawWebSocket {
    /// Opens `path`, sends `message` and returns the text of the first frame that comes back; a
    /// close frame instead (the tunnel ended) is an error.
    /// - Parameter networkNamespace: a ``NetworkLab`` host to connect from; nil: this machine.
    public static func echo(host: String, port: Int, path: String, headers: [(String, String)] = [], message: String,
                            timeout: TimeInterval = 30, networkNamespace: String? = nil) async throws -> String {
        try await onOwnThread {
            try NetworkLab.within(networkNamespace) {
                try blockingEcho(host: host, port: port, path: path, headers: headers, message: message, timeout: timeout)
            }
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

    /// A WebSocket kept open for many echoes, as a browser keeps one: each ``echo(_:)`` sends a
    /// text frame and reads what comes back, which is the echo, or the close that ended it.
    public final class Conversation: Sendable {
        let fd: Int32
        private let rest: Mutex<[UInt8]>

        /// What came back for one message.
        public enum Answer: Sendable, Equatable {
            case echoed(String)
            /// A close frame with its code (nil: one with no code).
            case closed(code: UInt16?)
            /// The connection ended with no close frame (a browser's 1006).
            case dropped
        }

        init(fd: Int32, rest: [UInt8]) {
            self.fd = fd
            self.rest = Mutex(rest)
        }

        deinit { Foundation.close(fd) }

        /// Opens `path` as a WebSocket.
        public static func open(host: String, port: Int, path: String, headers: [(String, String)] = [],
                                timeout: TimeInterval = 30) async throws -> Conversation {
            try await onOwnThread {
                let fd = try RawHTTPClient.connectedSocket(host: host, port: port, localAddress: nil, timeout: timeout)
                do {
                    return Conversation(fd: fd, rest: try upgrade(fd, host: host, port: port, path: path, headers: headers))
                } catch {
                    Foundation.close(fd)
                    throw error
                }
            }
        }

        /// Sends `message`; returns the first frame that comes back as an ``Answer``.
        public func echo(_ message: String) async -> Answer {
            try? await onOwnThread { try RawHTTPClient.sendAll(self.fd, RawWebSocket.frame(message)) }
            return await next()
        }

        /// Waits for the next frame (or the end), sending nothing.
        public func next() async -> Answer {
            (try? await onOwnThread { () -> Answer in
                var bytes = self.rest.withLock { rest in defer { rest = [] }; return rest }
                while true {
                    if let (opcode, payload, used) = RawWebSocket.serverFrame(bytes) {
                        self.rest.withLock { $0 = Array(bytes[used...]) }
                        if opcode == 0x8 {
                            return .closed(code: payload.count >= 2 ? UInt16(payload[0]) << 8 | UInt16(payload[1]) : nil)
                        }
                        return .echoed(String(decoding: payload, as: UTF8.self))
                    }
                    guard let more = try? RawHTTPClient.receive(self.fd) else { return .dropped }
                    bytes += more
                }
            }) ?? .dropped
        }
    }

    /// The first whole unmasked frame in `bytes`: its opcode, payload and length in all.
    static func serverFrame(_ bytes: [UInt8]) -> (opcode: UInt8, payload: [UInt8], used: Int)? {
        guard bytes.count >= 2 else { return nil }
        let short = Int(bytes[1] & 0x7f)
        let extended = short == 126 ? 2 : short == 127 ? 8 : 0
        guard bytes.count >= 2 + extended else { return nil }
        let length = extended == 0 ? short : bytes[2..<(2 + extended)].reduce(0) { $0 << 8 | Int($1) }
        let start = 2 + extended
        guard bytes.count >= start + length else { return nil }
        return (bytes[0] & 0x0f, Array(bytes[start..<(start + length)]), start + length)
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
        while true {
            if let (opcode, payload, _) = serverFrame(rest) {
                // A close instead of the echo (1012 when the session moves or its node stops) is
                // the tunnel ending cleanly, not an answer.
                guard opcode != 0x8 else {
                    let code = payload.count >= 2 ? String(UInt16(payload[0]) << 8 | UInt16(payload[1])) : "none"
                    throw TestFailure("the WebSocket was closed (code \(code)) before the echo came")
                }
                return String(decoding: payload, as: UTF8.self)
            }
            rest += try RawHTTPClient.receive(fd)
        }
    }
}

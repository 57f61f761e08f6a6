public import Foundation

/// A minimal WebSocket client over a blocking socket: upgrade, send one masked text frame,
/// read the echoed frame. Enough to prove a WebSocket works end to end through the proxy.
public enum RawWebSocket {
    /// Opens `path`, sends `message` and returns the text of the first frame that comes back.
    public static func echo(host: String, port: Int, path: String, headers: [(String, String)] = [], message: String,
                            timeout: TimeInterval = 10) throws -> String {
        let fd = try RawHTTPClient.connectedSocket(host: host, port: port, localAddress: nil, timeout: timeout)
        defer { close(fd) }
        let key = Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        var request = "GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n"
        for (name, value) in headers { request += "\(name): \(value)\r\n" }
        try sendAll(fd, Array((request + "\r\n").utf8))
        var received: [UInt8] = []
        var headEnd: Int?
        while headEnd == nil {
            received += try receive(fd)
            headEnd = find(Array("\r\n\r\n".utf8), in: received)
        }
        let head = String(decoding: received[..<headEnd!], as: UTF8.self)
        guard head.hasPrefix("HTTP/1.1 101") else { throw TestFailure("no upgrade: \(head.split(separator: "\r\n").first ?? "")") }
        var rest = Array(received[(headEnd! + 4)...])
        let payload = Array(message.utf8)
        precondition(payload.count < 126, "short messages only")
        let mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
        try sendAll(fd, [0x81, 0x80 | UInt8(payload.count)] + mask + payload.enumerated().map { $1 ^ mask[$0 % 4] })
        while rest.count < 2 || rest.count < 2 + Int(rest[1] & 0x7f) { rest += try receive(fd) }
        let length = Int(rest[1] & 0x7f)
        return String(decoding: rest[2..<(2 + length)], as: UTF8.self)
    }

    static func sendAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw TestFailure("send failed") }
            sent += n
        }
    }

    static func receive(_ fd: Int32) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { throw TestFailure("connection closed or timed out") }
        return Array(buffer[0..<n])
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for index in 0...(haystack.count - needle.count) where Array(haystack[index..<(index + needle.count)]) == needle { return index }
        return nil
    }
}

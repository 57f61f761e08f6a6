import DroverServer
import NIOCore
import NIOEmbedded
public import NIOHTTP1

/// How a reader of client requests read some bytes, as text to compare: a head as its request
/// line and fields, bodies joined, an end with its trailers; or the error that ended the reading.
/// The client request framer (`ClientRequestFramer`) is held to NIO's `HTTPRequestDecoder`
/// (llhttp) with it, by the framer's tests and by the request fuzz target.
public struct RequestReading: Equatable, CustomStringConvertible, Sendable {
    public var parts: [String] = []
    public var failed: String?

    public init() {}

    public mutating func note(_ part: HTTPServerRequestPart) {
        switch part {
        case .head(let head):
            parts.append("head \(head.method.rawValue) \(head.uri) \(head.version) " + head.headers.map { "\($0.name): \($0.value)" }.joined(separator: " | "))
        case .body(let bytes):
            // Byte for byte: printable ASCII as itself, any other byte as `\xHH`.
            let text = bytes.readableBytesView.reduce(into: "") { text, byte in
                if (0x20..<0x7f).contains(byte) && byte != UInt8(ascii: "\\") {
                    text.unicodeScalars.append(Unicode.Scalar(byte))
                } else {
                    text += "\\x" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
                }
            }
            if let last = parts.last, last.hasPrefix("body ") { parts[parts.count - 1] += text } else { parts.append("body " + text) }
        case .end(let trailers):
            parts.append("end" + (trailers.map { " " + $0.map { "\($0.name): \($0.value)" }.joined(separator: " | ") } ?? ""))
        }
    }

    /// The parts of the requests read whole: up to the last end.
    public var wholeRequests: [String] {
        Array(parts.prefix(parts.lastIndex { $0.hasPrefix("end") }.map { $0 + 1 } ?? 0))
    }

    public var description: String { parts.joined(separator: "\n") + (failed.map { "\nfailed: \($0)" } ?? "") }

    /// What NIO's decoder reads from `bytes`, given whole.
    public static func decoder(_ bytes: [UInt8]) -> RequestReading {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)))
        var reading = RequestReading()
        do {
            try channel.writeInbound(ByteBuffer(bytes: bytes))
        } catch {
            reading.failed = "\(error)"
        }
        while let part = try? channel.readInbound(as: HTTPServerRequestPart.self) { reading.note(part) }
        _ = try? channel.finish()
        return reading
    }

    /// What the framer reads from `bytes`, fed in pieces of `split` bytes, until it stops (an
    /// error, or a request that switches protocols).
    public static func framer(_ bytes: [UInt8], split: Int) -> RequestReading {
        var framer = ClientRequestFramer()
        var reading = RequestReading()
        var input = ByteBuffer()
        do {
            for start in stride(from: 0, to: bytes.count, by: max(split, 1)) {
                input.writeBytes(bytes[start..<min(start + max(split, 1), bytes.count)])
                while let part = try framer.next(&input) { reading.note(part) }
                if framer.isStopped { break }
            }
        } catch {
            reading.failed = "\(error)"
        }
        return reading
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}

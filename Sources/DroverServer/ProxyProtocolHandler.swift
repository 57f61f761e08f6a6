import Foundation
import NIOCore
import Synchronization

/// Who a connection is from, when a TCP load balancer said so in a PROXY protocol header
/// (``ProxyProtocolHandler``); read by the handlers after it.
final class ConnectionOrigin: Sendable {
    private let told = Mutex<String?>(nil)

    /// The client's address as the load balancer told it, or nil.
    var clientAddress: String? { told.withLock { $0 } }

    func set(_ address: String) { told.withLock { $0 = address } }
}

/// Reads the PROXY protocol header (version 1, text, or 2, binary; HAProxy's `send-proxy` and
/// `send-proxy-v2`, cloud TCP load balancers) that a trusted load balancer puts before the
/// client's bytes, records the client's address, passes on the rest and leaves the pipeline.
/// Added only for connections from `www-trusted-proxies` with `www-proxy-protocol=1`; a
/// connection from one of them that does not start with a header is closed.
final class ProxyProtocolHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    private let origin: ConnectionOrigin
    private var pending = ByteBuffer()

    init(origin: ConnectionOrigin) {
        self.origin = origin
    }

    enum Parse: Equatable {
        case needMore
        case invalid
        /// The header's length, and the client's address (nil: `LOCAL`/`UNKNOWN`, the proxy's own).
        case header(length: Int, client: String?)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var chunk = unwrapInboundIn(data)
        pending.writeBuffer(&chunk)
        switch Self.parse(Array(pending.readableBytesView)) {
        case .needMore:
            if pending.readableBytes > 536 { context.close(promise: nil) }  // longer than any header
        case .invalid:
            context.close(promise: nil)
        case .header(let length, let client):
            if let client { origin.set(client) }
            pending.moveReaderIndex(forwardBy: length)
            let rest = pending
            pending = ByteBuffer()
            if rest.readableBytes > 0 {
                context.fireChannelRead(wrapInboundOut(rest))
                context.fireChannelReadComplete()
            }
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    /// Parses a header at the start of `bytes`.
    static func parse(_ bytes: [UInt8]) -> Parse {
        if bytes.count < 12 {
            return v2Signature.starts(with: bytes) || Array("PROXY ".utf8).starts(with: bytes.prefix(6)) ? .needMore : .invalid
        }
        if bytes.starts(with: v2Signature) { return parseV2(bytes) }
        guard bytes.starts(with: Array("PROXY ".utf8)) else { return .invalid }
        guard let end = bytes.firstIndex(of: UInt8(ascii: "\n")) else { return bytes.count > 107 ? .invalid : .needMore }
        guard end > 0, bytes[end - 1] == UInt8(ascii: "\r"), end + 1 <= 107 else { return .invalid }
        let fields = String(decoding: bytes[6..<(end - 1)], as: UTF8.self).split(separator: " ")
        if fields.first == "UNKNOWN" { return .header(length: end + 1, client: nil) }
        guard fields.count == 5, fields[0] == "TCP4" || fields[0] == "TCP6",
              let sourcePort = Int(fields[3]), (0...65535).contains(sourcePort), Int(fields[4]) != nil,
              (try? SocketAddress(ipAddress: String(fields[1]), port: 0)) != nil else { return .invalid }
        return .header(length: end + 1, client: String(fields[1]))
    }

    private static func parseV2(_ bytes: [UInt8]) -> Parse {
        guard bytes.count >= 16 else { return .needMore }
        let versionCommand = bytes[12]
        guard versionCommand >> 4 == 2 else { return .invalid }
        let length = Int(bytes[14]) << 8 | Int(bytes[15])
        guard bytes.count >= 16 + length else { return length > 520 ? .invalid : .needMore }
        let command = versionCommand & 0x0F
        if command == 0 { return .header(length: 16 + length, client: nil) }  // LOCAL: the proxy's own check
        guard command == 1 else { return .invalid }
        let family = bytes[13] >> 4
        let body = Array(bytes[16..<(16 + length)])
        switch family {
        case 1 where body.count >= 12:  // IPv4: source, destination, ports
            return .header(length: 16 + length, client: body[0..<4].map(String.init).joined(separator: "."))
        case 2 where body.count >= 36:  // IPv6
            var address = in6_addr()
            withUnsafeMutableBytes(of: &address) { $0.copyBytes(from: body[0..<16]) }
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            guard inet_ntop(AF_INET6, &address, &text, socklen_t(text.count)) != nil else { return .invalid }
            return .header(length: 16 + length, client: String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        case 0:
            return .header(length: 16 + length, client: nil)  // UNSPEC
        default:
            return .invalid
        }
    }
}

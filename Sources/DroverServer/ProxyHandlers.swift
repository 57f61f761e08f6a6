import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// Reads one upstream connection's HTTP responses as bytes (``UpstreamResponseFramer``) and hands
/// them, event by event, to the client connection it serves. Lives on the client connection's
/// event loop.
final class UpstreamHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    weak var owner: RoutingServerHandler?
    private var framer = UpstreamResponseFramer()

    /// A request went out; its response comes next.
    func expect(method: HTTPMethod, dechunk: Bool) {
        framer.expect(method: method, dechunk: dechunk)
    }

    /// What the session sent after its `101`, once.
    func takeUpgradeRemainder() -> ByteBuffer? {
        framer.takeUpgradeRemainder()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        framer.receive(unwrapInboundIn(data))
        do {
            while let event = try framer.next() {
                owner?.upstreamEvent(event, reusable: framer.reusable, from: self)
            }
        } catch {
            owner?.upstreamMalformed(error, from: self)
            context.close(promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        owner?.upstreamReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let event = framer.connectionClosed() { owner?.upstreamEvent(event, reusable: false, from: self) }
        owner?.upstreamClosed(context.channel)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        owner?.upstreamWritabilityChanged(context.channel.isWritable)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// After a protocol upgrade: moves raw bytes to the partner channel, with backpressure.
final class GlueHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    var partner: GlueHandler?
    /// Called when this side sends (the client's: activity for the idle timeout), at most
    /// once a second.
    var onRead: (@Sendable () -> Void)?
    private var lastRead = NIODeadline.distantPast
    private var context: ChannelHandlerContext?
    private var pendingRead = false

    static func pair() -> (GlueHandler, GlueHandler) {
        let first = GlueHandler()
        let second = GlueHandler()
        first.partner = second
        second.partner = first
        return (first, second)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    private func partnerWrite(_ data: NIOAny) { context?.write(data, promise: nil) }
    private func partnerFlush() { context?.flush() }
    private func partnerWriteEOF() { context?.close(mode: .output, promise: nil) }
    private func partnerCloseFull() { context?.close(promise: nil) }
    private var partnerWritable: Bool { context?.channel.isWritable ?? false }

    private func partnerBecameWritable() {
        if pendingRead {
            pendingRead = false
            context?.read()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if let onRead {
            let now = NIODeadline.now()
            if now - lastRead >= .seconds(1) {
                lastRead = now
                onRead()
            }
        }
        partner?.partnerWrite(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.partnerFlush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        partner?.partnerCloseFull()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            partner?.partnerWriteEOF()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        partner?.partnerCloseFull()
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerBecameWritable() }
    }

    func read(context: ChannelHandlerContext) {
        if let partner, partner.partnerWritable {
            context.read()
        } else {
            pendingRead = true
        }
    }
}

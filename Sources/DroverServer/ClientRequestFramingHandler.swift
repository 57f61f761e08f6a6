import NIOCore
import NIOHTTP1

/// Turns a client connection's bytes into request parts with a ``ClientRequestFramer``, in place
/// of NIO's `ByteToMessageHandler(HTTPRequestDecoder)`, and behaves as that pair did towards the
/// handler after it:
/// - a request that breaks the framing rules is an `HTTPParserError` (``RoutingServerHandler``
///   answers 400), after which nothing more is read;
/// - a connection whose input ends in the middle of a request is one too (`invalidEOFState`);
/// - after a request that switches protocols, the bytes that came after it are handed on, as
///   they came, when this handler leaves the pipeline (the tunnel's glue gets them). Only
///   ``maximumBytesAfterSwitch`` of them wait: a client must wait for the switch before it sends
///   the new protocol, so one that streams instead is closed (the decoder buffered them all).
///
/// It carries the connection's ``ClientDeadlines`` too: the first to see the client's bytes, it
/// times a head from its first byte.
final class ClientRequestFramingHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = HTTPServerRequestPart

    /// How many bytes after a protocol switch wait for the switch to happen.
    static let maximumBytesAfterSwitch = 64 * 1024

    private var framer = ClientRequestFramer()
    /// Bytes read and not yet framed (part of a head, or what follows a protocol switch).
    private var pending: ByteBuffer?
    /// A request part is being handed on: bytes that arrive meanwhile wait for the loop.
    private var framing = false
    private var failed = false
    private var context: ChannelHandlerContext?
    /// What the framer reads when nothing is pending (one per connection, made once).
    private let nothing = ByteBuffer()
    private let deadlines: ClientDeadlines?

    init(deadlines: ClientDeadlines? = nil) {
        self.deadlines = deadlines
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        deadlines?.attach(context)
    }

    func channelActive(context: ChannelHandlerContext) {
        deadlines?.channelActive()
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        deadlines?.detach()
        // What came after a protocol switch belongs to the new protocol's handlers, which take
        // this one's place while the connection is open. Otherwise the handler after this one is
        // still the routing handler, which reads request parts, not bytes: a connection that
        // closes (its handlers removed) with bytes pending, after a switch the session refused or
        // behind an answer that closed it, sends them nowhere (FuzzHTTP found droverd trapping).
        if framer.isStopped, context.channel.isActive, let pending, pending.readableBytes > 0, !failed {
            self.pending = nil
            context.fireChannelRead(NIOAny(pending))
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        deadlines?.bytesArrived()
        guard !failed else { return }
        var bytes = unwrapInboundIn(data)
        if pending == nil || pending!.readableBytes == 0 {
            pending = bytes
        } else {
            pending!.writeBuffer(&bytes)
        }
        if framer.isStopped {
            if pending!.readableBytes > Self.maximumBytesAfterSwitch {
                failed = true
                pending = nil
                context.close(promise: nil)
            }
            return
        }
        frame(context: context)
    }

    /// Hands on every part the bytes pending hold, until the framer needs more, fails, or stops
    /// at a protocol switch.
    private func frame(context: ChannelHandlerContext) {
        guard !framing else { return }
        framing = true
        defer { framing = false }
        // The pending bytes are taken out while the framer reads them, so it works on a buffer
        // referenced once. (A request whose head came last may still end with no byte more: its
        // end is asked for with nothing pending.)
        while self.context != nil, !failed, !framer.isStopped {
            var input = pending ?? nothing
            pending = nil
            let part: HTTPServerRequestPart?
            do {
                part = try framer.next(&input)
            } catch {
                fail(error, context: context)
                return
            }
            pending = input.readableBytes > 0 ? input : nil
            guard let part else {
                if var rest = pending, rest.readerIndex > 16 * 1024 {
                    rest.discardReadBytes()
                    pending = rest
                }
                return
            }
            context.fireChannelRead(wrapInboundOut(part))
        }
    }

    private func fail(_ error: HTTPParserError, context: ChannelHandlerContext) {
        failed = true
        pending = nil
        context.fireErrorCaught(error)
    }

    /// Input that ends in the middle of a request is an error, as it was for the decoder.
    private func inputEnded(context: ChannelHandlerContext) {
        guard !failed, !framer.isStopped else { return }
        if !framer.isBetweenRequests || (pending?.readableBytes ?? 0) > 0 {
            fail(.invalidEOFState, context: context)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event { inputEnded(context: context) }
        context.fireUserInboundEventTriggered(event)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        deadlines?.readComplete()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadlines?.detach()
        inputEnded(context: context)
        context.fireChannelInactive()
    }
}

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
    /// Unchecked for overlapping access, as ``RoutingServerHandler``'s machine: one event loop,
    /// and the framer calls nothing outside it.
    @exclusivity(unchecked) private var framer = UpstreamResponseFramer()

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

/// Opens a connection to another node for one session (``HopOpening``): writes the signed
/// opening once the connection is up, reads the node's answer with the framer a session's
/// answers get, and leaves the pipeline on its `101`: what follows is the session's. Any other
/// answer (the owner's refusal: 404, 403, 502 …) fails `opened` with that answer, for the
/// client; no answer within `timeout` (`session-response-timeout`: the owner may be resuming the
/// session) fails it with 504.
final class HopOpeningHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// The node's answer, when it is not `101`: what the client is told.
    struct Refused: Error {
        let response: HTTPResponse
        /// The node no longer has the session (``SessionProxyResolver/hopMovedHeader``).
        var moved = false
        /// The session's listener is gone on that node (``SessionProxyResolver/hopGoneHeader``).
        var gone = false
    }

    /// A refusal's body is the owner's one-line reason: more is not read.
    static let maximumRefusalBody = 4096

    let opened: EventLoopPromise<Void>
    private let request: ByteBuffer
    private let timeout: TimeAmount
    private var framer = UpstreamResponseFramer()
    /// The owner's refusal: its status, body and `Retry-After` (an owner's "retry in a moment"
    /// reaches the client as it was said).
    private var refusal: (status: HTTPResponseStatus, body: ByteBuffer, retryAfter: String?, moved: Bool, gone: Bool)?
    private var timer: Scheduled<Void>?
    private var started = false
    private var settled = false

    init(request: ByteBuffer, timeout: TimeAmount, opened: EventLoopPromise<Void>) {
        self.request = request
        self.timeout = timeout
        self.opened = opened
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context: context)
        context.fireChannelActive()
    }

    private func start(context: ChannelHandlerContext) {
        guard !started else { return }
        started = true
        framer.expect(method: .GET, dechunk: false)
        context.writeAndFlush(wrapOutboundOut(request), promise: nil)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let seconds = timeout.nanoseconds / 1_000_000_000
        timer = context.eventLoop.scheduleTask(in: timeout) {
            let (this, context) = bound.value
            this.timer = nil
            this.fail(.gatewayTimeout, "504 gateway timeout: the session's node did not answer within \(seconds) s (session-response-timeout)\n",
                      context: context)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !settled else { return }
        framer.receive(unwrapInboundIn(data))
        do {
            while !settled, let event = try framer.next() {
                switch event {
                case .head(let head) where head.status == 101 && refusal == nil:
                    accept(context: context)
                case .head(let head):
                    let retryAfter = head.headers.first(name: "Retry-After").flatMap { Int($0) }.map(String.init)
                    refusal = (head.responseStatus, ByteBuffer(), retryAfter, head.headers.contains(name: SessionProxyResolver.hopMovedHeader),
                               head.headers.contains(name: SessionProxyResolver.hopGoneHeader))
                case .body(var chunk):
                    if let length = refusal?.body.readableBytes, length < Self.maximumRefusalBody { refusal?.body.writeBuffer(&chunk) }
                case .end:
                    let answer = refusal ?? (.badGateway, ByteBuffer(), nil, false, false)
                    var headers = HTTPHeaders()
                    headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
                    if let retryAfter = answer.retryAfter { headers.add(name: "Retry-After", value: retryAfter) }
                    settle(.failure(Refused(response: HTTPResponse(status: answer.status, headers: headers, body: answer.body), moved: answer.moved,
                                            gone: answer.gone)))
                    context.close(promise: nil)
                }
            }
        } catch {
            fail(.badGateway, "502 bad gateway: the session's node answered a hop with something that is not HTTP (\(error))\n", context: context)
        }
    }

    /// The `101`: this handler leaves, and the connection is the session's. Nothing may follow
    /// it before a request (a session does not speak first).
    private func accept(context: ChannelHandlerContext) {
        if framer.takeUpgradeRemainder() != nil {
            fail(.badGateway, "502 bad gateway: the session's node sent bytes after accepting a hop, before any request\n", context: context)
            return
        }
        settle(.success(()))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(.badGateway, "502 bad gateway: the session's node closed the connection; retry in a moment\n", context: context)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if settled {
            context.fireErrorCaught(error)
            return
        }
        fail(.badGateway, "502 bad gateway: the session's node does not answer (\(error)); retry in a moment\n", context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        settle(.failure(Refused(response: .text(.badGateway, "502 bad gateway: the connection to the session's node ended\n"))))
    }

    private func fail(_ status: HTTPResponseStatus, _ reason: String, context: ChannelHandlerContext) {
        guard !settled else { return }
        settle(.failure(Refused(response: .text(status, reason))))
        context.close(promise: nil)
    }

    private func settle(_ result: Result<Void, any Error>) {
        guard !settled else { return }
        settled = true
        timer?.cancel()
        timer = nil
        opened.completeWith(result)
    }
}

/// After a protocol upgrade: moves raw bytes to the partner channel, with backpressure.
///
/// On a WebSocket the node proxies for its client, the client's side follows the session's
/// frames (``WebSocketFrames``): when the session's side ends, or the node stops, it ends the
/// WebSocket with a close frame of 1012 (Service Restart) where a frame ends, unless the session
/// sent its own close. A client reconnects on it.
final class GlueHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Unchecked for overlapping access, as in ``RoutingServerHandler``: one event loop, read or
    /// assigned whole.
    @exclusivity(unchecked) var partner: GlueHandler?
    /// Called when this side sends (the client's: activity for the idle timeout), at most
    /// once a second.
    var onRead: (@Sendable () -> Void)?
    /// On the client's side of a WebSocket: the session's frames as they pass to the client.
    @exclusivity(unchecked) var webSocket: WebSocketFrames?
    /// The node is stopping: end the WebSocket where the session's frame being passed ends.
    private var closeAtBoundary = false
    private var lastRead = NIODeadline.distantPast
    @exclusivity(unchecked) private var context: ChannelHandlerContext?
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

    private func partnerWrite(_ buffer: ByteBuffer) {
        guard let context else { return }
        context.write(wrapOutboundOut(buffer), promise: nil)
        if webSocket != nil {
            webSocket!.pass(buffer)
            if closeAtBoundary, webSocket!.atBoundary { endWebSocket(context) }
        }
    }
    private func partnerFlush() { context?.flush() }
    private func partnerWriteEOF() {
        guard let context else { return }
        if webSocket != nil { return endWebSocket(context) }
        context.close(mode: .output, promise: nil)
    }
    private func partnerCloseFull() {
        guard let context else { return }
        if webSocket != nil { return endWebSocket(context) }
        context.close(promise: nil)
    }
    private var partnerWritable: Bool { context?.channel.isWritable ?? false }

    /// Ends a WebSocket whose session's side ended or whose node is stopping: the restart close
    /// frame where it may be written (at a frame's end, none of the session's own yet), then the
    /// connection; the session's side is closed too.
    private func endWebSocket(_ context: ChannelHandlerContext) {
        let channel = context.channel
        let partner = partner
        self.partner = nil
        partner?.partner = nil
        partner?.context?.close(promise: nil)
        guard let frames = webSocket, frames.atBoundary, !frames.closeSeen else {
            context.close(promise: nil)
            return
        }
        webSocket = nil
        context.writeAndFlush(wrapOutboundOut(WebSocketFrames.restartClose)).whenComplete { _ in channel.close(promise: nil) }
        // A client that reads nothing more never lets the frame be written: closed all the same.
        channel.eventLoop.scheduleTask(in: .seconds(5)) { channel.close(promise: nil) }
    }

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
        partner?.partnerWrite(unwrapInboundIn(data))
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
        } else if event is ChannelShouldQuiesceEvent, let frames = webSocket {
            // The node is stopping: the WebSocket ends now, or where the frame on its way ends.
            if frames.atBoundary { endWebSocket(context) } else { closeAtBoundary = true }
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

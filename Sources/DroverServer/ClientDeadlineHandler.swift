public import NIOCore

/// How much a client may hold of a node: how long it may take to send a request's head, how
/// long an idle keep-alive connection stays, and how many connections may be open at once
/// (`www-header-timeout`, `www-keep-alive-timeout`, `www-max-connections` in `rserver.conf`).
public struct ClientLimits: Sendable, Equatable {
    public var headerTimeout: TimeAmount
    public var keepAliveTimeout: TimeAmount
    public var maxConnections: Int

    public init(headerTimeout: TimeAmount = .seconds(30), keepAliveTimeout: TimeAmount = .seconds(75), maxConnections: Int = 4096) {
        self.headerTimeout = headerTimeout
        self.keepAliveTimeout = keepAliveTimeout
        self.maxConnections = maxConnections
    }
}

/// Where a client connection is between its exchanges, as ``RoutingServerHandler`` tells
/// ``ClientDeadlineHandler`` (an outbound user event, so the two share no state).
enum ClientPhase: Sendable {
    /// A request's head arrived: its body and answer have deadlines of their own.
    case exchange
    /// The exchange is over and the connection stays open for the next request.
    case betweenRequests
    /// The connection became a byte tunnel (WebSocket): it lives as long as its session's.
    case tunnel
}

/// Closes a client connection that is too slow to send a request's head (slowloris: a byte
/// now and then keeps no worker busy here, but each connection holds a file descriptor), or
/// that stays idle between requests past the keep-alive timeout. It sits before the HTTP
/// decoder and sees the raw bytes: a head's time is counted from its first byte, however
/// slowly the rest comes. One timer per connection at a time.
final class ClientDeadlineHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = NIOAny
    typealias OutboundOut = NIOAny

    private enum State {
        /// Nothing of the next request has come yet.
        case awaitingRequest
        /// The first bytes of a head came; the whole head must by the deadline.
        case readingHead
        case exchange
        case tunnel
    }

    private let limits: ClientLimits
    private var state = State.awaitingRequest
    private var timer: Scheduled<Void>?

    init(limits: ClientLimits) {
        self.limits = limits
    }

    func handlerAdded(context: ChannelHandlerContext) {
        // A new connection must send its first request's head within the header timeout.
        if context.channel.isActive { arm(limits.headerTimeout, context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        if timer == nil, state == .awaitingRequest { arm(limits.headerTimeout, context: context) }
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancel()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if state == .awaitingRequest {
            state = .readingHead
            arm(limits.headerTimeout, context: context)
        }
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancel()
        context.fireChannelInactive()
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard let phase = event as? ClientPhase else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        switch phase {
        case .exchange:
            state = .exchange
            cancel()
        case .betweenRequests:
            state = .awaitingRequest
            arm(limits.keepAliveTimeout, context: context)
        case .tunnel:
            state = .tunnel
            cancel()
        }
        promise?.succeed()
    }

    private func arm(_ amount: TimeAmount, context: ChannelHandlerContext) {
        cancel()
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: amount) {
            channel.close(promise: nil)
        }
    }

    private func cancel() {
        timer?.cancel()
        timer = nil
    }
}

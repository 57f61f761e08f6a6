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
/// ``ClientDeadlineHandler``: by a direct call when the server built them into one pipeline
/// (both run on the connection's event loop; an event through the pipeline cost every
/// request two trips past the HTTP handlers and a dynamic cast), else as an outbound user
/// event.
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
/// slowly the rest comes.
///
/// One timer per connection, moved on lazily: a keep-alive connection passes through every
/// state on every request, and scheduling and cancelling timers for each was a measurable
/// share of the proxy's work. The timer is only ever due at or before the deadline in force;
/// when it fires early it is set again for the deadline, and when the deadline is gone (an
/// exchange in progress) it lapses.
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
    // Unchecked for overlapping access (dynamic checks on every request, as in
    // ``RoutingServerHandler``): one event loop, and no access spans a call that reaches it again.
    @exclusivity(unchecked) private var state = State.awaitingRequest
    /// When the connection is closed unless the state moves on first; nil during an exchange
    /// and in a tunnel.
    @exclusivity(unchecked) private var deadline: NIODeadline?
    @exclusivity(unchecked) private var timer: (task: Scheduled<Void>, due: NIODeadline)?
    private var context: ChannelHandlerContext?

    init(limits: ClientLimits) {
        self.limits = limits
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        // A new connection must send its first request's head within the header timeout.
        if context.channel.isActive { expect(within: limits.headerTimeout) }
    }

    func channelActive(context: ChannelHandlerContext) {
        if deadline == nil, state == .awaitingRequest { expect(within: limits.headerTimeout) }
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancel()
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if state == .awaitingRequest {
            state = .readingHead
            // The timer is set when the read is over, if the head is still incomplete then:
            // most heads arrive whole and the exchange begins within this read.
            deadline = .now() + limits.headerTimeout
        }
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if state == .readingHead { armForDeadline() }
        context.fireChannelReadComplete()
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
        enter(phase)
        promise?.succeed()
    }

    /// The connection moved on to `phase`. Only on the connection's event loop.
    func enter(_ phase: ClientPhase) {
        switch phase {
        case .exchange:
            state = .exchange
            deadline = nil
        case .betweenRequests:
            state = .awaitingRequest
            expect(within: limits.keepAliveTimeout)
        case .tunnel:
            state = .tunnel
            deadline = nil
        }
    }

    private func expect(within amount: TimeAmount) {
        deadline = .now() + amount
        armForDeadline()
    }

    /// Makes sure the timer fires by the deadline: a timer due later is replaced, one due
    /// earlier is left to fire and look again.
    private func armForDeadline() {
        guard let deadline, let context else { return }
        if let timer, timer.due <= deadline { return }
        timer?.task.cancel()
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        timer = (context.eventLoop.scheduleTask(deadline: deadline) { bound.value.timerFired() }, deadline)
    }

    private func timerFired() {
        timer = nil
        guard let deadline else { return }
        if deadline <= .now() {
            context?.close(promise: nil)
        } else {
            armForDeadline()
        }
    }

    private func cancel() {
        timer?.task.cancel()
        timer = nil
        deadline = nil
    }
}

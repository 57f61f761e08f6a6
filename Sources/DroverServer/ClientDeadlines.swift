public import NIOCore

/// How much a client may hold of a node: how long it may take to send a request's head, how
/// long an idle keep-alive connection stays, and how many connections may be open at once
/// (`www-header-timeout`, `www-keep-alive-timeout`, `www-max-connections` in `rserver.conf`).
public struct ClientLimits: Sendable {
    public var headerTimeout: TimeAmount
    public var keepAliveTimeout: TimeAmount
    public var maxConnections: Int
    /// `www-body-timeout`: a body to the node's own endpoints must come whole within it; a body
    /// streamed to a session may not pause (the node reading, the client sending nothing) longer.
    public var bodyTimeout: TimeAmount
    /// `www-max-connections-per-address`: client connections one address may hold open.
    public var maxConnectionsPerAddress: Int
    /// Sources that are never starved by clients: the cluster's nodes and this machine (the
    /// CLI). They are not held to the per-address cap, and have room beyond `maxConnections`.
    public var isPrivileged: @Sendable (String) -> Bool
    /// `www-trusted-proxies`: not held to the per-address cap (their clients are many), and
    /// the only peers whose forwarding headers are believed.
    var trustedProxies = TrustedProxies(ranges: [])
    /// `www-proxy-protocol`: connections from trusted proxies start with a PROXY protocol header.
    var proxyProtocol = false
    /// The requests in progress of each client of the trusted proxies (one table per server).
    let forwardedClients = ForwardedClients()

    /// Connections beyond `maxConnections` kept for privileged sources.
    public static let reserve = 64

    public init(headerTimeout: TimeAmount = .seconds(30), keepAliveTimeout: TimeAmount = .seconds(75), maxConnections: Int = 4096,
                bodyTimeout: TimeAmount = .seconds(60), maxConnectionsPerAddress: Int = 256,
                isPrivileged: @escaping @Sendable (String) -> Bool = { _ in false }) {
        self.headerTimeout = headerTimeout
        self.keepAliveTimeout = keepAliveTimeout
        self.maxConnections = maxConnections
        self.bodyTimeout = bodyTimeout
        self.maxConnectionsPerAddress = maxConnectionsPerAddress
        self.isPrivileged = isPrivileged
    }
}

/// How a request's body is timed (``ClientLimits/bodyTimeout``).
enum BodyRule: Sendable, Equatable {
    /// To the node's own endpoints (at most 1 MiB): whole within the timeout.
    case whole
    /// Streamed to a session (any length): no pause longer than the timeout.
    case steady
}

/// Where a client connection is between its exchanges, as ``RoutingServerHandler`` tells
/// ``ClientDeadlines``: by a direct call when the server built them for one connection (both
/// run on the connection's event loop; an event through the pipeline cost every request two
/// trips past the HTTP handlers and a dynamic cast), else as an outbound user event.
enum ClientPhase: Sendable {
    /// A request's head arrived: its answer has a deadline of its own; its body, when it has one
    /// (`body`), must come by `www-body-timeout`: whole for the node's own endpoints (`.whole`),
    /// never pausing longer for a session (`.steady`).
    case exchange(body: BodyRule?)
    /// The request's body has come whole.
    case requestComplete
    /// The node stopped or resumed reading the client (backpressure from a slow session): a
    /// pause that is the node's own is not the client's.
    case reading(Bool)
    /// The exchange is over and the connection stays open for the next request.
    case betweenRequests
    /// The connection became a byte tunnel (WebSocket): it lives as long as its session's.
    case tunnel
}

/// Closes a client connection that is too slow to send a request's head (slowloris: a byte
/// now and then keeps no worker busy here, but each connection holds a file descriptor), or
/// that stays idle between requests past the keep-alive timeout. The connection's
/// ``ClientRequestFramingHandler`` owns it and tells it of the raw bytes before it frames them,
/// so a head's time is counted from its first byte, however slowly the rest comes;
/// ``RoutingServerHandler`` tells it where the exchange is (``enter(_:)``). It is no handler of
/// its own: a duplex handler in the pipeline cost every read, write and flush a trip through it.
///
/// One timer per connection, moved on lazily: a keep-alive connection passes through every
/// state on every request, and scheduling and cancelling timers for each was a measurable
/// share of the proxy's work. The timer is only ever due at or before the deadline in force;
/// when it fires early it is set again for the deadline, and when the deadline is gone (an
/// exchange in progress) it lapses. Only on the connection's event loop.
final class ClientDeadlines {
    private enum State: Equatable {
        /// Nothing of the next request has come yet.
        case awaitingRequest
        /// The first bytes of a head came; the whole head must by the deadline.
        case readingHead
        case exchange
        /// A body is coming, by the rule.
        case readingBody(BodyRule)
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

    /// The owning handler joined the pipeline.
    func attach(_ context: ChannelHandlerContext) {
        self.context = context
        // A new connection must send its first request's head within the header timeout.
        if context.channel.isActive { expect(within: limits.headerTimeout) }
    }

    func channelActive() {
        if deadline == nil, state == .awaitingRequest { expect(within: limits.headerTimeout) }
    }

    /// The owning handler left the pipeline, or the connection closed.
    func detach() {
        cancel()
        context = nil
    }

    /// Bytes came from the client (before they are framed).
    func bytesArrived() {
        if state == .readingBody(.steady), deadline != nil {
            deadline = .now() + limits.bodyTimeout  // the timer, due earlier, looks again
        }
        if state == .awaitingRequest {
            state = .readingHead
            // The timer is set when the read is over, if the head is still incomplete then:
            // most heads arrive whole and the exchange begins within this read.
            deadline = .now() + limits.headerTimeout
        }
    }

    /// A read from the client is over.
    func readComplete() {
        if state == .readingHead { armForDeadline() }
    }

    /// The connection moved on to `phase`.
    func enter(_ phase: ClientPhase) {
        switch phase {
        case .exchange(let body):
            if let body {
                state = .readingBody(body)
                expect(within: limits.bodyTimeout)
            } else {
                state = .exchange
                deadline = nil
            }
        case .requestComplete:
            if case .readingBody = state {
                state = .exchange
                deadline = nil
            }
        case .reading(let on):
            if case .readingBody = state {
                if on { expect(within: limits.bodyTimeout) } else { deadline = nil }
            }
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

import DroverKernel
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// Serves one client connection: the node's own endpoints from bounded, buffered requests, and
/// session traffic (`/s/<id>/…`) streamed to and from the session through a reused upstream
/// connection. A `101 Switching Protocols` from the session turns both connections into a raw
/// byte tunnel (WebSocket). Requests are handled one at a time; a pipelined request waits.
final class RoutingServerHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// Bodies of the node's own endpoints are small; anything larger is refused with 413.
    static let maximumBodySize = 1 << 20
    static let connectTimeout = TimeAmount.seconds(5)

    private let responder: any HTTPResponder
    private let proxy: (any ProxyResolver)?
    private let logger: Logger
    private let isTLS: Bool
    /// How long a session may take to start answering a request (`session-response-timeout`).
    private let responseTimeout: TimeAmount
    private var context: ChannelHandlerContext?

    private enum Mode {
        case idle
        /// A request for the node itself, its body collected.
        case local(head: HTTPRequestHead, body: ByteBuffer, tooLarge: Bool)
        /// A local response is being produced; the request has ended.
        case respondingLocally
        /// A proxied request whose destination is being decided; its parts wait.
        case resolving(head: HTTPRequestHead, parts: [HTTPServerRequestPart])
        /// A proxied request streaming to the upstream.
        case streaming
        /// A request answered without the session; the rest of its body is dropped.
        case discarding
        case upgraded
    }

    private var mode = Mode.idle
    private var queued: [HTTPServerRequestPart] = []
    private var requestEnded = false
    private var responseStarted = false
    private var responseEnded = false
    private var clientKeepAlive = true
    /// The client half-closed: it sends nothing more, but still reads what it asked for.
    private var inputClosed = false
    private var upgradeRequested = false
    private var upgrading = false
    private var upstream: (channel: any Channel, key: String, handler: UpstreamHandler)?
    private var onUpstreamFailure: (@Sendable () -> Void)?
    /// When the session must have started answering the request in flight; nil when none waits.
    private var responseDeadline: NIODeadline?
    private var responseVersion = HTTPVersion.http1_1
    /// At most one timer per connection, moved on lazily: keep-alive traffic does not schedule
    /// and cancel a timer for every request.
    private var responseTimer: Scheduled<Void>?
    /// Whether reading from the client is paused (autoRead off).
    private var readsPaused = false
    /// The client's address for X-Forwarded-For, worked out once per connection.
    private lazy var clientAddress: String = context?.remoteAddress?.ipAddress ?? "unknown"

    init(responder: any HTTPResponder, proxy: (any ProxyResolver)?, isTLS: Bool, responseTimeout: TimeAmount, logger: Logger) {
        self.responder = responder
        self.responseTimeout = responseTimeout
        self.proxy = proxy
        self.isTLS = isTLS
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if case .upgraded = mode {} else { upstream?.channel.close(promise: nil) }
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .upgraded = mode { return }
        upstream?.channel.close(promise: nil)
        upstream = nil
        stopResponseTimer()
    }

    private func setAutoRead(_ on: Bool) {
        guard readsPaused == on else { return }
        readsPaused = !on
        _ = context?.channel.setOption(ChannelOptions.autoRead, value: on)
    }

    // MARK: the response deadline

    /// Starts waiting for the session's answer to the request just sent.
    private func awaitResponse(version: HTTPVersion) {
        let deadline = NIODeadline.now() + responseTimeout
        responseDeadline = deadline
        responseVersion = version
        if responseTimer == nil { scheduleResponseCheck(at: deadline) }
    }

    private func scheduleResponseCheck(at deadline: NIODeadline) {
        guard let context else { return }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        responseTimer = context.eventLoop.scheduleTask(deadline: deadline) { bound.value.checkResponseDeadline() }
    }

    private func checkResponseDeadline() {
        responseTimer = nil
        guard let deadline = responseDeadline else { return }
        guard deadline <= .now() else {
            scheduleResponseCheck(at: deadline)
            return
        }
        responseDeadline = nil
        guard !responseStarted else { return }
        // Forget the upstream before closing it, so its closing is not taken for a session
        // that hung up (which would answer 502 instead).
        let late = upstream?.channel
        upstream = nil
        late?.close(promise: nil)
        writeResponse(.text(.gatewayTimeout, "504 gateway timeout: the session did not answer within \(responseTimeout.nanoseconds / 1_000_000_000) s (session-response-timeout)\n"),
                      version: responseVersion)
    }

    private func stopResponseTimer() {
        responseDeadline = nil
        responseTimer?.cancel()
        responseTimer = nil
    }

    // MARK: client side

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        handle(unwrapInboundIn(data))
    }

    private func handle(_ part: HTTPServerRequestPart) {
        // Behind a waiting pipelined request, every part waits too, in order.
        if !queued.isEmpty {
            queued.append(part)
            return
        }
        switch (mode, part) {
        case (.idle, .head(let head)):
            startRequest(head)
        case (.idle, _), (.upgraded, _):
            break
        case (.local(let head, var body, var tooLarge), .body(var chunk)):
            if body.readableBytes + chunk.readableBytes > Self.maximumBodySize { tooLarge = true } else { body.writeBuffer(&chunk) }
            mode = .local(head: head, body: body, tooLarge: tooLarge)
        case (.local(let head, let body, let tooLarge), .end):
            respondLocally(head: head, body: body, tooLarge: tooLarge)
        case (.resolving(let head, var parts), _):
            if case .head = part { queued.append(part); setAutoRead(false); return }
            parts.append(part)
            if case .end = part { requestEnded = true }
            mode = .resolving(head: head, parts: parts)
        case (.streaming, .body(let chunk)):
            upstream?.channel.write(HTTPClientRequestPart.body(.byteBuffer(chunk)), promise: nil)
        case (.streaming, .end):
            requestEnded = true
            upstream?.channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
            finishIfDone()
        case (.discarding, .end):
            requestEnded = true
            finishIfDone()
        case (_, .head):
            // Pipelined: wait for the current exchange to finish.
            queued.append(part)
            setAutoRead(false)
        default:
            if case .end = part { requestEnded = true }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if case .streaming = mode { upstream?.channel.flush() }
    }

    /// A client that shuts down its sending side after its request (`shutdown(SHUT_WR)`, as
    /// some scripts and HTTP/1.0 tools do) still gets its answers; then the connection closes.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let event = event as? ChannelEvent, case .inputClosed = event else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        inputClosed = true
        if case .idle = mode, queued.isEmpty { context.close(promise: nil) }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        _ = upstream?.channel.setOption(ChannelOptions.autoRead, value: context.channel.isWritable)
    }

    private func startRequest(_ head: HTTPRequestHead) {
        requestEnded = false
        responseStarted = false
        responseEnded = false
        clientKeepAlive = head.isKeepAlive
        guard head.uri.hasPrefix("/s/"), let proxy else {
            mode = .local(head: head, body: ByteBuffer(), tooLarge: false)
            return
        }
        upgradeRequested = head.headers[canonicalForm: "connection"].contains { $0.lowercased() == "upgrade" } && head.headers.contains(name: "upgrade")
        mode = .resolving(head: head, parts: [])
        if let decision = proxy.cachedDecision(for: head) {
            apply(decision, head: head)
            return
        }
        setAutoRead(false)
        guard let context else { return }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.makeFutureWithTask { await proxy.decision(for: head) }.whenSuccess { decision in
            bound.value.apply(decision, head: head)
        }
    }

    // MARK: local responses

    private func respondLocally(head: HTTPRequestHead, body: ByteBuffer, tooLarge: Bool) {
        requestEnded = true
        mode = .respondingLocally
        guard let context else { return }
        if tooLarge {
            writeResponse(.text(.payloadTooLarge, "request body over \(Self.maximumBodySize) bytes\n"), version: head.version)
            return
        }
        if let immediate = responder.immediateResponse(to: head) {
            writeResponse(immediate, version: head.version)
            return
        }
        let request = HTTPRequest(head: head, body: body, remoteAddress: context.remoteAddress)
        let responder = self.responder
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.makeFutureWithTask { await responder.respond(to: request) }.whenSuccess { response in
            bound.value.writeResponse(response, version: head.version)
        }
    }

    /// Writes a whole response of our own and completes the exchange.
    private func writeResponse(_ response: HTTPResponse, version: HTTPVersion) {
        guard let context else { return }
        var headers = response.headers
        headers.replaceOrAdd(name: "Content-Length", value: String(response.body.readableBytes))
        if !clientKeepAlive { headers.replaceOrAdd(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: response.status, headers: headers))), promise: nil)
        if response.body.readableBytes > 0 { context.write(wrapOutboundOut(.body(.byteBuffer(response.body))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        responseStarted = true
        responseEnded = true
        if case .resolving = mode { mode = .discarding }
        finishIfDone()
    }

    /// Once both the request and its response are complete, closes or moves to the next one.
    private func finishIfDone() {
        guard requestEnded, responseEnded, let context else { return }
        responseDeadline = nil
        mode = .idle
        if !clientKeepAlive || (inputClosed && queued.isEmpty) {
            context.close(promise: nil)
            return
        }
        setAutoRead(true)
        let waiting = queued
        queued = []
        for part in waiting { handle(part) }
    }

    // MARK: proxying

    private func apply(_ decision: ProxyDecision, head: HTTPRequestHead) {
        guard case .resolving = mode, context != nil else { return }
        switch decision {
        case .respond(let response):
            mode = .discarding
            setAutoRead(true)
            writeResponse(response, version: head.version)
        case .forward(let target, let tls, let extra, let onFailure):
            onUpstreamFailure = onFailure
            var outgoing = head
            let client = clientAddress
            let forwardedFor = head.headers.first(name: "X-Forwarded-For").map { "\($0), \(client)" } ?? client
            outgoing.headers.replaceOrAdd(name: "X-Forwarded-For", value: forwardedFor)
            if !head.headers.contains(name: "X-Forwarded-Proto") { outgoing.headers.add(name: "X-Forwarded-Proto", value: isTLS ? "https" : "http") }
            if !head.headers.contains(name: "X-Forwarded-Host"), let host = head.headers.first(name: "Host") { outgoing.headers.add(name: "X-Forwarded-Host", value: host) }
            // Hop headers count only as this node adds them; the sign-in cookie is Drover's
            // alone and never reaches a session (the next node trusts the signed hop instead).
            for name in SessionProxyResolver.hopHeaders where outgoing.headers.contains(name: name) { outgoing.headers.remove(name: name) }
            if let cookie = outgoing.headers.first(name: "Cookie"), cookie.contains(SignInCookie.name) {
                outgoing.headers.remove(name: "Cookie")
                if let others = SignInCookie.removing(SignInCookie.name, fromHeader: cookie) { outgoing.headers.add(name: "Cookie", value: others) }
            }
            for (name, value) in extra { outgoing.headers.replaceOrAdd(name: name, value: value) }
            if !upgradeRequested { outgoing.headers.remove(name: "Connection") }
            let key = "\(target):\(tls != nil)"
            if let current = upstream, current.key == key, current.channel.isActive {
                send(outgoing, on: current.channel)
            } else {
                upstream?.channel.close(promise: nil)
                upstream = nil
                connect(to: target, tls: tls, key: key, then: outgoing)
            }
        }
    }

    private func connect(to target: Upstream, tls: NIOSSLContext?, key: String, then head: HTTPRequestHead) {
        guard let context else { return }
        let handler = UpstreamHandler()
        handler.owner = self
        let bound = NIOLoopBound(handler, eventLoop: context.eventLoop)
        let me = NIOLoopBound(self, eventLoop: context.eventLoop)
        var bootstrap = ClientBootstrap(group: context.eventLoop).connectTimeout(Self.connectTimeout)
        if case .tcp = target { bootstrap = bootstrap.channelOption(.tcpOption(.tcp_nodelay), value: 1) }
        let connecting = bootstrap
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: nil))
                    }
                    try channel.pipeline.syncOperations.addHandler(HTTPRequestEncoder(), name: "client-encoder")
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .forwardBytes)), name: "client-decoder")
                    try channel.pipeline.syncOperations.addHandler(bound.value, name: "upstream")
                }
            }
        let connected: EventLoopFuture<any Channel>
        switch target {
        case .unix(let path): connected = connecting.connect(unixDomainSocketPath: path)
        case .tcp(let host, let port): connected = connecting.connect(peer: host, port: port)
        }
        connected.whenComplete { result in
                let this = me.value
                switch result {
                case .success(let channel):
                    guard this.context != nil else { channel.close(promise: nil); return }
                    this.upstream = (channel, key, bound.value)
                    this.send(head, on: channel)
                case .failure(let error):
                    this.onUpstreamFailure?()
                    this.logger.debug("proxy upstream unreachable", metadata: ["upstream": "\(target)", "error": "\(error)"])
                    this.writeResponse(.text(.badGateway, "502 bad gateway: the session does not answer; retry in a moment\n"),
                                       version: head.version)
                }
            }
    }

    /// Sends the request head, then every part that arrived while the destination was being
    /// decided or connected (read now, not when the decision was made: more may have come).
    private func send(_ head: HTTPRequestHead, on channel: any Channel) {
        guard context != nil, case .resolving(_, let parts) = mode else { return }
        mode = .streaming
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        for part in parts {
            switch part {
            case .body(let chunk): channel.write(HTTPClientRequestPart.body(.byteBuffer(chunk)), promise: nil)
            case .end(let trailers): channel.write(HTTPClientRequestPart.end(trailers), promise: nil)
            case .head: break
            }
        }
        channel.flush()
        awaitResponse(version: head.version)
        setAutoRead(true)
    }

    // MARK: upstream side

    func upstreamRead(_ part: HTTPClientResponsePart) {
        guard let context, case .streaming = mode else { return }
        switch part {
        case .head(var head):
            responseStarted = true
            responseDeadline = nil
            if head.status == .switchingProtocols, upgradeRequested {
                upgrading = true
            } else if !clientKeepAlive {
                head.headers.replaceOrAdd(name: "Connection", value: "close")
            }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: head.status, headers: head.headers))), promise: nil)
        case .body(let chunk):
            context.write(wrapOutboundOut(.body(.byteBuffer(chunk))), promise: nil)
            if !context.channel.isWritable { _ = upstream?.channel.setOption(ChannelOptions.autoRead, value: false) }
        case .end(let trailers):
            if upgrading {
                context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { [bound = NIOLoopBound(self, eventLoop: context.eventLoop)] _ in
                    bound.value.becomeTunnel()
                }
                return
            }
            context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: nil)
            responseEnded = true
            finishIfDone()
        }
    }

    func upstreamReadComplete() {
        context?.flush()
    }

    func upstreamWritabilityChanged(_ writable: Bool) {
        setAutoRead(writable)
    }

    func upstreamClosed(_ channel: any Channel) {
        guard upstream?.channel === channel else { return }
        upstream = nil
        guard case .streaming = mode, !upgrading else { return }
        if !responseStarted {
            onUpstreamFailure?()
            writeResponse(.text(.badGateway, "502 bad gateway: the session closed the connection\n"), version: .http1_1)
        } else if !responseEnded {
            context?.close(promise: nil)
        }
    }

    /// After `101 Switching Protocols`: both connections drop HTTP and pass bytes through.
    ///
    /// Order matters: the encoders go first (raw bytes must not reach them), then the HTTP
    /// handlers, and the decoders last, so that bytes they already read past the HTTP part are
    /// handed on to the glue.
    private func becomeTunnel() {
        guard let context, let upstream else { return }
        mode = .upgraded
        self.upstream = nil
        stopResponseTimer()
        let clientChannel = context.channel
        let upstreamChannel = upstream.channel
        let (clientGlue, upstreamGlue) = GlueHandler.pair()
        let client = context.pipeline.syncOperations
        let server = upstreamChannel.pipeline.syncOperations
        do {
            try client.addHandler(clientGlue)
            try server.addHandler(upstreamGlue)
        } catch {
            clientChannel.close(promise: nil)
            upstreamChannel.close(promise: nil)
            return
        }
        client.removeHandler(name: "http-encoder", promise: nil)
        server.removeHandler(name: "client-encoder", promise: nil)
        server.removeHandler(name: "upstream", promise: nil)
        client.removeHandler(name: "http-errors", promise: nil)
        client.removeHandler(context: context, promise: nil)
        server.removeHandler(name: "client-decoder", promise: nil)
        client.removeHandler(name: "http-decoder", promise: nil)
        _ = clientChannel.setOption(ChannelOptions.autoRead, value: true)
        _ = upstreamChannel.setOption(ChannelOptions.autoRead, value: true)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("connection closed after error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}

import DroverCluster
import DroverKernel
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// Serves one client connection by carrying out what its ``ProxyConnectionStateMachine`` says:
/// the node's own endpoints from bounded, buffered requests, and session traffic (`/s/<id>/…`)
/// streamed to and from the session through a reused upstream connection, until a
/// `101 Switching Protocols` turns both connections into a raw byte tunnel (WebSocket). Another
/// node's session hop is one too: its verified opening (``HopOpening``) is answered with the
/// node's own `101` once the session's socket is connected (``ProxyDecision/splice(_:onFailure:)``).
///
/// Everything goes out as bytes: the node's own responses are written here
/// (``HTTPResponseHead/serialized(body:)``), the session's pass through as they came
/// (``UpstreamResponseFramer``), and a forwarded request's head is serialized here
/// (``HTTPRequestHead/serialized()``) with its body framed by ``RequestBodyFraming``; no encoders.
final class RoutingServerHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = ByteBuffer

    static let connectTimeout = TimeAmount.seconds(5)

    private let responder: any HTTPResponder
    private let proxy: (any ProxyResolver)?
    private let logger: Logger
    private let isTLS: Bool
    // The properties marked `@exclusivity(unchecked)` are used several times for every request,
    // and each use was a dynamic exclusivity check (a share of the proxy's instructions that
    // docs/BENCHMARKS.md measures). Only
    // this connection's event loop touches them, and no access to one spans a call that could
    // reach it again (the machine's mutating methods call nothing outside it; the others are
    // read or assigned whole), so no two accesses can overlap.
    @exclusivity(unchecked) private var context: ChannelHandlerContext?
    /// The connection's deadlines, told of each phase directly; nil when the server made none
    /// (the phase then goes out as an outbound user event).
    private let clientDeadlines: ClientDeadlines?
    @exclusivity(unchecked) private var machine: ProxyConnectionStateMachine

    /// The upstream connection the machine's `upstreamKey` names.
    @exclusivity(unchecked) private var upstream: (channel: any Channel, handler: UpstreamHandler)?
    /// What to call when the upstream of the request in flight does not answer.
    private var onUpstreamFailure: (@Sendable () -> Void)?
    /// The headers the proxy adds to the request in progress: a trailer may not carry them either.
    private var addedHeaders: [(String, String)] = []
    private var responseTimer: Scheduled<Void>?
    /// Whether reading from the client is on (autoRead), kept in step with the machine's wish.
    @exclusivity(unchecked) private var reading = true
    /// The headers of the request in progress (a tunnel is registered with its cookie).
    private var requestHead = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")
    /// The proxied request in flight and when it arrived, until its answer's head is written.
    @exclusivity(unchecked) private var proxied: (head: HTTPRequestHead, since: NIODeadline)?
    /// How the body of the request in flight is framed on its way to the upstream.
    @exclusivity(unchecked) private var requestFraming = RequestBodyFraming.asItIs
    /// A response's head is written and its end is not (a malformed request then gets no 400).
    @exclusivity(unchecked) private var responseInFlight = false
    /// The connection's peer, worked out once per connection.
    private lazy var peerAddress: String = origin?.clientAddress ?? context?.remoteAddress?.ipAddress ?? "unknown"
    /// Who the connection is from when a trusted TCP load balancer said so (PROXY protocol).
    private let origin: ConnectionOrigin?
    private lazy var peerIsTrustedProxy: Bool = !trustedProxies.isEmpty && trustedProxies.contains(peerAddress)
    private let trustedProxies: TrustedProxies
    /// A trusted proxy's clients, each held to its share one request at a time.
    private let forwardedClients: ForwardedClients?
    private let forwardedLimit: Int
    /// The client of a trusted proxy whose request is in progress on this connection.
    @exclusivity(unchecked) private var forwardedClient: String?

    /// - Parameter responseTimeout: how long a session may take to start answering a request
    ///   (`session-response-timeout`).
    init(responder: any HTTPResponder, proxy: (any ProxyResolver)?, isTLS: Bool, responseTimeout: TimeAmount, logger: Logger,
         clientDeadlines: ClientDeadlines? = nil, trustedProxies: TrustedProxies = TrustedProxies(ranges: []),
         origin: ConnectionOrigin? = nil, forwardedClients: ForwardedClients? = nil, forwardedLimit: Int = .max) {
        self.trustedProxies = trustedProxies
        self.forwardedClients = forwardedClients
        self.forwardedLimit = forwardedLimit
        self.origin = origin
        self.responder = responder
        self.clientDeadlines = clientDeadlines
        self.proxy = proxy
        self.isTLS = isTLS
        self.logger = logger
        machine = ProxyConnectionStateMachine(responseTimeout: responseTimeout)
    }

    private func enter(_ phase: ClientPhase) {
        if let clientDeadlines {
            clientDeadlines.enter(phase)
        } else {
            context?.triggerUserOutboundEvent(phase, promise: nil)
        }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if !machine.isTunnel { upstream?.channel.close(promise: nil) }
        self.context = nil
    }

    // MARK: events in

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        handle(unwrapInboundIn(data))
    }

    private func handle(_ part: HTTPServerRequestPart) {
        switch part {
        case .head(let head):
            let proxied = proxy != nil && head.uri.hasPrefix("/s/")
            let hasBody = head.headers.contains(name: "Transfer-Encoding")
                || (head.headers.first(name: "Content-Length").flatMap(Int.init) ?? 0) > 0
            enter(.exchange(body: hasBody ? (proxied ? .steady : .whole) : nil))
            if machine.queuedNothing { requestHead = head }
            // A trusted proxy's client past its share of requests in progress: 503, the
            // proxy's connection kept (the body is read and dropped).
            // (A client a PROXY header named is counted so too: its connection came from the proxy.)
            if peerIsTrustedProxy || origin?.clientAddress != nil, machine.queuedNothing, let forwardedClients {
                let client = peerIsTrustedProxy ? trustedProxies.client(peer: peerAddress, headers: head.headers).address : peerAddress
                if forwardedClients.enter(client, limit: forwardedLimit) {
                    forwardedClient = client
                } else {
                    let action = machine.requestHead(head, proxied: true)
                    guard case .resolve = action else { return run(action) }
                    return run(machine.decided(.text(.serviceUnavailable, "503 service unavailable: \(client) has www-max-connections-per-address requests in progress\n",
                                                     headers: ["Retry-After": "1"])))
                }
            }
            run(machine.requestHead(head, proxied: proxied))
        case .body(let chunk): run(machine.requestBody(chunk))
        case .end(let trailers):
            enter(.requestComplete)
            run(machine.requestEnd(trailers))
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if machine.isStreaming { upstream?.channel.flush() }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            run(machine.quiesce())
            return
        }
        guard let event = event as? ChannelEvent, case .inputClosed = event else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        run(machine.clientInputClosed())
    }

    func channelInactive(context: ChannelHandlerContext) {
        leaveForwardedClient()
        run(machine.clientClosed())
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        _ = upstream?.channel.setOption(ChannelOptions.autoRead, value: context.channel.isWritable)
        syncReads()
    }

    /// - Parameter reusable: whether the session keeps the connection after this response.
    func upstreamEvent(_ event: UpstreamResponseFramer.Event, reusable: Bool, from handler: UpstreamHandler) {
        guard let upstream, upstream.handler === handler else { return }
        switch event {
        case .head(let head): run(machine.upstreamHead(head))
        case .body(let chunk):
            run(machine.upstreamBody(chunk))
            if let context, !context.channel.isWritable { _ = upstream.channel.setOption(ChannelOptions.autoRead, value: false) }
        case .end:
            if !reusable {
                // The session said it closes: forgotten now, so that the next request connects
                // anew instead of racing the close.
                self.upstream = nil
                machine.upstreamRetired()
                upstream.channel.close(promise: nil)
            }
            run(machine.upstreamEnd())
        }
    }

    func upstreamMalformed(_ failure: UpstreamResponseFramer.Failure, from handler: UpstreamHandler) {
        guard let upstream, upstream.handler === handler else { return }
        logger.warning("a session's answer is malformed; its connection is closed", metadata: ["reason": "\(failure)"])
        self.upstream = nil
        upstream.channel.close(promise: nil)
        run(machine.upstreamMalformed(failure))
    }

    func upstreamReadComplete() {
        context?.flush()
    }

    func upstreamWritabilityChanged(_ writable: Bool) {
        machine.upstreamWritabilityChanged(writable)
        syncReads()
    }

    func upstreamClosed(_ channel: any Channel) {
        guard upstream?.channel === channel else { return }
        upstream = nil
        run(machine.upstreamClosed())
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("connection closed after error", metadata: ["error": "\(error)"])
        // A request that is not HTTP is told so, unless an answer is already under way.
        if error is HTTPParserError, !responseInFlight {
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(staticString: Self.badRequest)), promise: nil)
        }
        context.close(promise: nil)
    }

    static let badRequest: StaticString = "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    /// The answer to another node's accepted ``HopOpening``.
    static let spliceAccepted: StaticString = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: drover-session\r\n\r\n"

    // MARK: actions out

    private func run(_ action: ProxyConnectionStateMachine.Action) {
        defer { syncReads() }
        guard let context else { return }
        switch action {
        case .none:
            break
        case .resolve(let head):
            proxied = (head, .now())
            resolve(head)
        case .resolveAgain(let head, let wait):
            onUpstreamFailure?()
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: wait) { bound.value.resolve(head) }
        case .respondLocally(let head, let body):
            respondLocally(head: head, body: body, context: context)
        case .respond(let response):
            // Answered by the proxy without reaching a session (refused, not found): not a
            // proxied request.
            proxied = nil
            write(response, context: context)
        case .reportUpstreamFailure(let response):
            onUpstreamFailure?()
            answered(Int(response.head.status.code))
            write(response, context: context)
        case .abandonUpstream(let response):
            answered(Int(response.head.status.code))
            // Forgotten before it is closed, so its closing is not taken for a session that
            // hung up (which would answer 502 instead).
            let late = upstream?.channel
            upstream = nil
            late?.close(promise: nil)
            write(response, context: context)
        case .connect(let target, let tls, let closingCurrent):
            if closingCurrent {
                let current = upstream?.channel
                upstream = nil
                current?.close(promise: nil)
            }
            connect(to: target, tls: tls, context: context)
        case .send(let head, let parts, let timerDeadline):
            send(head, parts: parts)
            if let timerDeadline { scheduleTimer(at: timerDeadline, context: context) }
        case .closeNewUpstream:
            break  // handled where the connection completes
        case .forwardBody(let chunk):
            upstream?.channel.write(requestFraming.body(chunk), promise: nil)
        case .forwardEnd(let trailers, let next):
            if let end = requestFraming.end(ForwardedRequest.trailers(trailers, adding: addedHeaders)) {
                upstream?.channel.writeAndFlush(end, promise: nil)
            } else {
                upstream?.channel.flush()
            }
            if let next { carryOut(next, context: context) }
        case .writeHead(let head, let status):
            answered(status)
            responseInFlight = true
            context.write(wrapOutboundOut(head), promise: nil)
        case .writeBytes(let bytes):
            context.write(wrapOutboundOut(bytes), promise: nil)
        case .writeEnd(let next):
            responseInFlight = false
            context.flush()
            carryOut(next, context: context)
        case .writeEndThenOpenTunnel:
            context.flush()
            run(machine.tunnelReady())
        case .acceptSplice:
            proxied = nil
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(staticString: Self.spliceAccepted)), promise: nil)
            run(machine.tunnelReady())
        case .openTunnel:
            openTunnel(context: context)
        case .scheduleTimer(let deadline):
            scheduleTimer(at: deadline, context: context)
        case .close:
            context.close(promise: nil)
        case .closeUpstream:
            upstream?.channel.close(promise: nil)
            upstream = nil
            responseTimer?.cancel()
            responseTimer = nil
        case .finish(let next):
            carryOut(next, context: context)
        }
    }

    /// Tells the proxy that the request in flight was answered.
    private func answered(_ status: Int) {
        guard let (head, since) = proxied else { return }
        proxied = nil
        proxy?.answered(head, status: status, took: .nanoseconds((NIODeadline.now() - since).nanoseconds))
    }

    /// Reads from the client while the machine wants requests and the client takes its answers:
    /// a client that sends requests without reading what they answer (pipelined, forever) would
    /// otherwise grow the connection's outbound buffer without end (a security read found one
    /// connection taking droverd from 40 MB to 966 MB in 15 s).
    private func syncReads() {
        guard let context else { return }
        let wanted = machine.wantsReads && context.channel.isWritable
        guard wanted != reading else { return }
        reading = wanted
        _ = context.channel.setOption(ChannelOptions.autoRead, value: wanted)
        enter(.reading(wanted))
    }

    /// Writes a whole response of the node's own, then does what follows it.
    private func write(_ response: ProxyConnectionStateMachine.OwnResponse, context: ChannelHandlerContext) {
        responseInFlight = false
        context.writeAndFlush(wrapOutboundOut(response.head.serialized(body: response.body)), promise: nil)
        carryOut(response.next, context: context)
    }

    private func carryOut(_ next: ProxyConnectionStateMachine.Next, context: ChannelHandlerContext) {
        switch next {
        case .awaitRequestEnd:
            break
        case .close:
            context.close(promise: nil)
        case .nextRequest(let replay):
            leaveForwardedClient()
            enter(.betweenRequests)
            for part in replay { handle(part) }
        }
    }

    private func leaveForwardedClient() {
        if let client = forwardedClient {
            forwardedClients?.leave(client)
            forwardedClient = nil
        }
    }

    private func scheduleTimer(at deadline: NIODeadline, context: ChannelHandlerContext) {
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        responseTimer = context.eventLoop.scheduleTask(deadline: deadline) {
            let this = bound.value
            this.responseTimer = nil
            this.run(this.machine.timerFired(now: .now()))
        }
    }

    // MARK: the node's own endpoints

    private func respondLocally(head: HTTPRequestHead, body: ByteBuffer, context: ChannelHandlerContext) {
        if let immediate = responder.immediateResponse(to: head) {
            run(machine.localResponse(immediate))
            return
        }
        let told = origin?.clientAddress.flatMap { try? SocketAddress(ipAddress: $0, port: 0) }
        let request = HTTPRequest(head: head, body: body, remoteAddress: told ?? context.remoteAddress)
        let responder = self.responder
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.makeFutureWithTask { await responder.respond(to: request) }.whenSuccess { response in
            bound.value.run(bound.value.machine.localResponse(response))
        }
    }

    // MARK: proxying

    /// `scheme://host` as the browser used them, when a trusted proxy (a TLS terminator) said;
    /// nil: the node's own scheme and the request's `Host`.
    private func browserOrigin(_ head: HTTPRequestHead) -> String? {
        guard peerIsTrustedProxy else { return nil }
        let client = trustedProxies.client(peer: peerAddress, headers: head.headers)
        guard client.scheme != nil || client.host != nil else { return nil }
        return (client.scheme ?? (isTLS ? "https" : "http")) + "://" + (client.host ?? head.headers.first(name: "Host")?.lowercased() ?? "")
    }

    private func resolve(_ head: HTTPRequestHead) {
        guard let proxy, let context else { return }
        let origin = browserOrigin(head)
        if let decision = proxy.cachedDecision(for: head, origin: origin) {
            apply(decision, head: head)
            return
        }
        machine.resolutionDeferred()
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.makeFutureWithTask { await proxy.decision(for: head, origin: origin) }.whenSuccess { decision in
            bound.value.apply(decision, head: head)
        }
    }

    private func apply(_ decision: ProxyDecision, head: HTTPRequestHead) {
        switch decision {
        case .respond(let response):
            run(machine.decided(response))
        case .splice(let endpoint, let onFailure):
            onUpstreamFailure = onFailure
            run(machine.splice(to: .session(endpoint)))
        case .forward(let target, let tls, let extra, let stripping, let onFailure):
            onUpstreamFailure = onFailure
            addedHeaders = extra
            let client = peerIsTrustedProxy ? trustedProxies.client(peer: peerAddress, headers: head.headers) : TrustedProxies.Client(address: peerAddress)
            var outgoing = ForwardedRequest.head(for: head, clientAddress: client.address, isTLS: client.scheme.map { $0 == "https" } ?? isTLS,
                                                 adding: extra, upgrade: machine.upgradeRequested, forwardedHost: client.host)
            if let stripping { outgoing.uri = ForwardedRequest.stripping(stripping, from: outgoing.uri) }
            run(machine.forward(outgoing, to: target, tls: tls, upstreamActive: upstream?.channel.isActive ?? false, now: .now()))
        }
    }

    /// Connects to a session of this node by its kind's endpoint; nothing is sent before the
    /// listener is known to be the session's (a planted socket, a squatted port are refused).
    /// - The guard's socket: as any Unix socket (only droverd can reach it).
    /// - A user's socket: connected without blocking (a program that lets its queue fill up is
    ///   refused at once, never waited for on the event loop) with the user's rights, its
    ///   credentials checked, then handed to NIO.
    /// - A port: connected by NIO, not reading, then checked on the blocking-work pool (the check
    ///   reads /proc); reading starts once it passed.
    static func connect(_ bootstrap: ClientBootstrap, to endpoint: SessionEndpoint, on loop: any EventLoop, logger: Logger) -> EventLoopFuture<any Channel> {
        let refused: @Sendable (SessionEndpointRefusal) -> Void = { refusal in
            if refusal.isForeign { logger.warning("refused a session's endpoint", metadata: ["endpoint": "\(endpoint)", "reason": "\(refusal.reason)"]) }
        }
        switch endpoint.address {
        case .guardSocket(let path):
            return bootstrap.connect(unixDomainSocketPath: path)
        case .userSocket:
            do throws(SessionEndpointRefusal) {
                return bootstrap.withConnectedSocket(try SessionConnector().connect(endpoint, timeout: 0))
            } catch {
                refused(error)
                return loop.makeFailedFuture(error)
            }
        case .loopbackPort(let port):
            return bootstrap.channelOption(.autoRead, value: false).connect(host: "127.0.0.1", port: port).flatMap { channel in
                let localPort = UInt16(channel.localAddress?.port ?? 0)
                return NIOThreadPool.singleton.runIfActive(eventLoop: channel.eventLoop) {
                    do throws(SessionEndpointRefusal) {
                        try SessionConnector().verifyTCP(endpoint, localPort: localPort)
                    } catch {
                        refused(error)
                        throw error
                    }
                }.flatMap {
                    channel.setOption(.autoRead, value: true).map { channel }
                }.flatMapErrorThrowing { error in
                    channel.close(promise: nil)
                    throw error
                }
            }
        }
    }

    private func connect(to target: Upstream, tls: NIOSSLContext?, context: ChannelHandlerContext) {
        let handler = UpstreamHandler()
        handler.owner = self
        let bound = NIOLoopBound(handler, eventLoop: context.eventLoop)
        let me = NIOLoopBound(self, eventLoop: context.eventLoop)
        var bootstrap = ClientBootstrap(group: context.eventLoop).connectTimeout(Self.connectTimeout)
        var tlsName: String?
        var opening: HopOpeningHandler?
        switch target {
        case .unix, .session:
            break
        case .tcp(_, _, let name, let connectTimeout):
            bootstrap = bootstrap.channelOption(.tcpOption(.tcp_nodelay), value: 1).connectTimeout(connectTimeout)
            tlsName = name
        case .node(_, _, let name, let connectTimeout, let hop):
            bootstrap = bootstrap.channelOption(.tcpOption(.tcp_nodelay), value: 1).connectTimeout(connectTimeout)
            tlsName = name
            opening = HopOpeningHandler(request: hop.request(), timeout: machine.responseTimeout,
                                        opened: context.eventLoop.makePromise(of: Void.self))
        }
        let openingBound = NIOLoopBound(opening, eventLoop: context.eventLoop)
        let connecting = bootstrap
            .channelInitializer { [tlsName] channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    if let tls { try pipeline.addHandler(NIOSSLClientHandler(context: tls, serverHostname: tlsName)) }
                    if let opening = openingBound.value { try pipeline.addHandler(opening) }
                    try pipeline.addHandler(bound.value, name: PipelineHandlerName.upstream)
                }
            }
        var connected: EventLoopFuture<any Channel>
        switch target {
        case .unix(let path): connected = connecting.connect(unixDomainSocketPath: path)
        case .session(let endpoint):
            connected = Self.connect(connecting, to: endpoint, on: context.eventLoop, logger: logger)
        case .tcp(let host, let port, _, _), .node(let host, let port, _, _, _): connected = connecting.connect(peer: host, port: port)
        }
        if let opened = opening?.opened {
            // Connected once the node has accepted the opening; a refusal is its answer.
            connected.whenFailure { opened.fail($0) }  // never written: the promise is settled all the same
            connected = connected.flatMap { channel in
                opened.futureResult.map { channel }.flatMapErrorThrowing { error in
                    channel.close(promise: nil)
                    throw error
                }
            }
        }
        connected.whenComplete { result in
            let this = me.value
            switch result {
            case .success(let channel):
                guard this.context != nil else { channel.close(promise: nil); return }
                let action = this.machine.upstreamConnected(now: .now())
                if case .closeNewUpstream = action {
                    channel.close(promise: nil)
                    return
                }
                this.upstream = (channel, bound.value)
                this.run(action)
            case .failure(let refused as HopOpeningHandler.Refused):
                this.logger.debug("a node did not accept a session hop", metadata: ["upstream": "\(target)", "status": "\(refused.response.status.code)"])
                guard this.context != nil else { return }
                // A session that moved is asked for again: its route here is forgotten first.
                if refused.moved { this.onUpstreamFailure?() }
                this.run(this.machine.upstreamRefused(refused.response, moved: refused.moved, gone: refused.gone))
            case .failure(let error):
                this.logger.debug("proxy upstream unreachable", metadata: ["upstream": "\(target)", "error": "\(error)"])
                this.run(this.machine.upstreamConnectFailed(gone: Self.listenerIsGone(error)))
            }
        }
    }

    /// Whether a connect failed because nothing listens there (refused, or no such socket): a
    /// session that stopped listening (it is being suspended or moved), or a node that stopped.
    static func listenerIsGone(_ error: any Error) -> Bool {
        let gone: Set<Int32> = [ECONNREFUSED, ENOENT]
        switch error {
        case let refusal as SessionEndpointRefusal: return refusal.errorNumber.map(gone.contains) ?? false
        case let io as IOError: return gone.contains(io.errnoCode)
        case let connection as NIOConnectionError:
            return !connection.connectionErrors.isEmpty && connection.connectionErrors.allSatisfy { ($0.error as? IOError).map { gone.contains($0.errnoCode) } ?? false }
        default: return false
        }
    }

    /// Sends the request head and every part that arrived while the destination was being
    /// decided or connected.
    private func send(_ head: HTTPRequestHead, parts: [HTTPServerRequestPart]) {
        guard let (channel, handler) = upstream else { return }
        handler.expect(method: head.method, dechunk: head.version == .http1_0)
        requestFraming = RequestBodyFraming(head)
        channel.write(head.serialized(), promise: nil)
        for part in parts {
            switch part {
            case .body(let chunk): channel.write(requestFraming.body(chunk), promise: nil)
            case .end(let trailers):
                if let end = requestFraming.end(ForwardedRequest.trailers(trailers, adding: addedHeaders)) { channel.write(end, promise: nil) }
            case .head: break
            }
        }
        channel.flush()
    }

    /// After `101 Switching Protocols`: both connections drop HTTP and pass bytes through.
    ///
    /// Order matters: what the session sent past its `101` goes first, the glue is added before
    /// the HTTP handlers leave, and the client's decoder last, so that bytes it already read past
    /// the request are handed on to the glue.
    private func openTunnel(context: ChannelHandlerContext) {
        guard let upstream else { return }
        self.upstream = nil
        responseTimer?.cancel()
        responseTimer = nil
        enter(.tunnel)
        // A hop's splice is not a WebSocket of this node's: the node the client reached counts it.
        let activity = machine.isSplice ? nil : proxy?.tunnelOpened(context.channel, request: requestHead)
        let clientChannel = context.channel
        let upstreamChannel = upstream.channel
        let early = upstream.handler.takeUpgradeRemainder()
        if let early { context.writeAndFlush(wrapOutboundOut(early), promise: nil) }
        let (clientGlue, upstreamGlue) = GlueHandler.pair()
        clientGlue.onRead = activity
        // The node that faces the client ends a WebSocket for it when the session goes away
        // (a hop's far end leaves that to the node the client reached).
        if !machine.isSplice, requestHead.headers[canonicalForm: "upgrade"].contains(where: { $0.lowercased() == "websocket" }) {
            var frames = WebSocketFrames()
            if let early { frames.pass(early) }
            clientGlue.webSocket = frames
        }
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
        server.removeHandler(name: PipelineHandlerName.upstream, promise: nil)
        client.removeHandler(context: context, promise: nil)
        client.removeHandler(name: PipelineHandlerName.decoder, promise: nil)
        _ = clientChannel.setOption(ChannelOptions.autoRead, value: true)
        _ = upstreamChannel.setOption(ChannelOptions.autoRead, value: true)
    }
}

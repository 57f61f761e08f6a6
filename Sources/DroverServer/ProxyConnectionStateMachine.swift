import NIOCore
import NIOHTTP1
import NIOSSL

/// The life of one client connection of a node's HTTP server, as a value: every event (a part
/// of the client's request, the destination decided, the upstream connected, failed, answering
/// or closed, the response timer) goes in, and the one thing to do comes out as an ``Action``.
/// ``RoutingServerHandler`` only carries actions out, so every state and transition is here,
/// testable without sockets.
///
/// A connection serves one exchange (request and response) at a time: the node's own endpoints
/// from a bounded, buffered request; session traffic (`/s/<id>/…`) streamed to and from the
/// session through an upstream connection reused while it goes to the same place. A pipelined
/// request waits, in order, until the exchange before it has finished. A `101 Switching
/// Protocols` from the session turns the connection into a byte tunnel.
struct ProxyConnectionStateMachine {
    /// Bodies of the node's own endpoints are small; anything larger is refused with 413.
    static let maximumBodySize = 1 << 20

    enum Phase {
        /// Between exchanges.
        case idle
        /// A request for the node itself, its body being collected.
        case local(head: HTTPRequestHead, body: ByteBuffer)
        /// The node's own response is being produced; the request has ended.
        case respondingLocally
        /// A proxied request whose destination is being decided; its parts wait.
        case resolving(head: HTTPRequestHead, parts: [HTTPServerRequestPart])
        /// The upstream is being connected; `head` goes first once it is, then `parts`.
        case connecting(head: HTTPRequestHead, parts: [HTTPServerRequestPart])
        /// The request streams to the upstream and the response back.
        case streaming
        /// The request was answered without the session; the rest of its body is dropped.
        case discarding
        /// The session switched protocols; its `101` is being written before the tunnel opens.
        case switchingProtocols
        /// Bytes pass through; HTTP is over on this connection.
        case tunnel
    }

    /// What the connection does after a response was written in full.
    enum Next: Equatable {
        /// The request is still arriving: keep reading it (and drop it, when not forwarded).
        case awaitRequestEnd
        /// Close the connection.
        case close
        /// Start on the next request: feed `replay` (the parts that waited) back in, in order.
        case nextRequest(replay: [HTTPServerRequestPart])
    }

    /// A response of the node's own, complete, with what follows it.
    struct OwnResponse {
        var head: HTTPResponseHead
        var body: ByteBuffer
        var next: Next
    }

    enum Action {
        case none
        /// Decide where the proxied request goes (``ProxyResolver``): feed ``decided(_:)`` or
        /// ``forward(_:to:tls:upstreamActive:now:)`` back.
        case resolve(HTTPRequestHead)
        /// Forget the session's route, then after `after` decide again where the request goes
        /// (``resolve(_:)``): its session could not be reached, or hung up without a byte of
        /// answer, and the request is sent again (``sendAgain(_:)``).
        case resolveAgain(HTTPRequestHead, after: TimeAmount)
        /// Produce the node's own response and feed it back with ``localResponse(_:)``.
        case respondLocally(HTTPRequestHead, body: ByteBuffer)
        /// Write a response of the node's own.
        case respond(OwnResponse)
        /// Tell the resolver the upstream did not answer, then write the response.
        case reportUpstreamFailure(OwnResponse)
        /// Drop the upstream (its closing is not the session hanging up), then respond: 504 when
        /// it did not answer in time, 502 when its answer is not one to pass on.
        case abandonUpstream(OwnResponse)
        /// Close the current upstream if `closingCurrent`, connect to `upstream` and feed
        /// ``upstreamConnected(now:)`` or ``upstreamConnectFailed()`` back.
        case connect(Upstream, tls: NIOSSLContext?, closingCurrent: Bool)
        /// Send the request head and the parts that waited on the upstream, flush, and arm the
        /// response timer for `timerDeadline` unless one is armed already (nil).
        case send(HTTPRequestHead, parts: [HTTPServerRequestPart], timerDeadline: NIODeadline?)
        /// The upstream connected after the exchange was over: close it.
        case closeNewUpstream
        case forwardBody(ByteBuffer)
        /// Forward the request's end and flush; `next` when the response had already ended.
        case forwardEnd(HTTPHeaders?, next: Next?)
        /// Write the head of the session's final answer (`status`), as bytes.
        case writeHead(ByteBuffer, status: Int)
        /// Write bytes of the session's answer as they are (its body, or an informational head).
        case writeBytes(ByteBuffer)
        /// The session's answer is complete: flush, then do `next`.
        case writeEnd(next: Next)
        /// Flush the `101`, then feed ``tunnelReady()`` back.
        case writeEndThenOpenTunnel
        /// A hop's opening is accepted (its session's socket connected): write and flush the
        /// node's own `101`, then feed ``tunnelReady()`` back.
        case acceptSplice
        /// Replace both connections' HTTP handlers by the byte tunnel.
        case openTunnel
        /// The response timer fired early (it is moved on lazily): arm it again.
        case scheduleTimer(NIODeadline)
        case close
        /// The client is gone: close the upstream and stop the timer.
        case closeUpstream
        /// Apply `next` (after a response the handler produced was written).
        case finish(Next)
    }

    /// How long a session may take to start answering a request (`session-response-timeout`).
    let responseTimeout: TimeAmount

    private(set) var phase = Phase.idle
    /// Parts of pipelined requests, waiting for the exchange in progress to finish.
    private var queued: [HTTPServerRequestPart] = []
    /// The exchange in progress.
    private var version = HTTPVersion.http1_1
    private var keepAlive = true
    /// The node is stopping: the exchange in progress is the connection's last.
    private var quiescing = false
    private(set) var upgradeRequested = false
    /// The target of the proxied request in progress, nil for another request.
    private var proxiedURI: String?
    /// The client's request head while it is proxied, and whether its destination was asked
    /// again after the node it went to said the session had moved (once per request).
    private var clientHead: HTTPRequestHead?
    private var askedAgain = false
    /// The request as sent, while the session has answered nothing and it comes to at most
    /// ``resendableBodySize`` bytes (its body copied into one buffer of this connection's own, so
    /// that no read buffer of the client's is held; its trailers counted too): once whole
    /// (`ended`), it can be sent again (``sendAgain(_:)``).
    private var resendable: (body: ByteBuffer, ended: HTTPHeaders??)?
    /// When the request's first sending must have been answered: resending does not move it, so
    /// `session-response-timeout` bounds the whole exchange.
    private var exchangeDeadline: NIODeadline?
    /// Times the request in progress was sent again.
    private var resends = 0
    /// How often a request is sent again: after 0.1, 0.2, 0.4 and 0.8 s, then every second, about
    /// 10 s in all, the time a session is given to save its state and exit when it is suspended.
    static let resendLimit = 13
    static let resendableBodySize = 64 * 1024
    /// `/s/<id>/` of the proxied request in progress: the session's cookies are confined to it.
    /// Worked out when an answer sets cookies, not for every request.
    private var sessionPath: String? {
        proxiedURI.flatMap { SessionProxyResolver.sessionID(uri: $0) }.map { "/s/\($0)/" }
    }
    private var requestEnded = false
    private var responseStarted = false
    private var responseEnded = false
    /// The client half-closed: it sends nothing more, but still reads what it asked for.
    private var inputClosed = false
    /// Where the connected upstream goes, nil when there is none.
    private(set) var upstreamKey: UpstreamKey?
    /// The request is another node's opening (``HopOpening``): its session's socket is being
    /// connected, and the connection becomes a byte tunnel to it.
    private(set) var isSplice = false
    /// The upstream stopped taking the request's bytes.
    private var upstreamFull = false
    /// The request waits for its destination (or for its upstream to connect).
    private var awaitingUpstream = false
    /// When the session must have started answering; nil when no answer is awaited.
    private(set) var responseDeadline: NIODeadline?
    /// At most one timer per connection, moved on lazily: keep-alive traffic does not schedule
    /// and cancel a timer for every request.
    private var timerArmed = false

    init(responseTimeout: TimeAmount) {
        self.responseTimeout = responseTimeout
    }

    /// Whether the client's bytes should be read now: not while a pipelined request waits, the
    /// destination is being decided or connected, or the upstream is full.
    var wantsReads: Bool { queued.isEmpty && !awaitingUpstream && !upstreamFull }

    /// Whether request bytes are being forwarded (so a read burst ends with a flush upstream).
    var isStreaming: Bool {
        if case .streaming = phase { true } else { false }
    }

    /// Whether no pipelined request waits, and the machine is between exchanges: the head
    /// arriving now is the one that will be served next.
    var queuedNothing: Bool {
        if case .idle = phase { queued.isEmpty } else { false }
    }

    var isTunnel: Bool {
        if case .tunnel = phase { true } else { false }
    }

    // MARK: the client's request

    /// - Parameter proxied: whether the request goes to a session (`/s/…` with a resolver).
    mutating func requestHead(_ head: HTTPRequestHead, proxied: Bool) -> Action {
        guard queued.isEmpty else { return queue(.head(head)) }
        switch phase {
        case .idle:
            break
        case .tunnel:
            return .none
        default:
            return queue(.head(head))
        }
        version = head.version
        // After a request that switches protocols the framer reads no more: what follows may be
        // the new protocol's. Should the answer not switch (a session or Drover refusing the
        // upgrade), the connection cannot go on as HTTP and closes after it.
        let switching = ClientRequestFramer.switchesProtocols(head)
        keepAlive = head.isKeepAlive && !quiescing && !switching
        requestEnded = false
        responseStarted = false
        responseEnded = false
        // A header named in `Connection` is not passed on; were `Content-Length` or
        // `Transfer-Encoding` named, the body would reach the session unframed, and the session
        // would read it as further requests this node never saw (smuggling).
        if Self.connectionNamesFraming(head.headers) {
            keepAlive = false
            requestEnded = true
            phase = .respondingLocally
            return .respond(ownResponse(.text(.badRequest, "400 bad request: Connection may not name Content-Length or Transfer-Encoding\n")))
        }
        guard proxied else {
            phase = .local(head: head, body: ByteBuffer())
            // A body announced over the cap is refused before any of it is read.
            if let length = head.headers.first(name: "Content-Length").flatMap(Int.init), length > Self.maximumBodySize {
                return refuseTooLarge()
            }
            return .none
        }
        // A session may switch an upgrade, never a CONNECT (a proxy's request, not a session's).
        upgradeRequested = switching && head.method != .CONNECT
        proxiedURI = head.uri
        clientHead = head
        askedAgain = false
        resendable = nil
        exchangeDeadline = nil
        resends = 0
        phase = .resolving(head: head, parts: [])
        return .resolve(head)
    }

    mutating func requestBody(_ chunk: ByteBuffer) -> Action {
        guard queued.isEmpty else { return queue(.body(chunk)) }
        switch phase {
        case .local(let head, var body):
            phase = .idle  // lets `body` be appended to without a copy
            // A chunked body that grows over the cap is refused as soon as it does.
            if body.readableBytes + chunk.readableBytes > Self.maximumBodySize { return refuseTooLarge() }
            var chunk = chunk
            body.writeBuffer(&chunk)
            phase = .local(head: head, body: body)
            return .none
        case .resolving(let head, var parts):
            phase = .idle
            parts.append(.body(chunk))
            phase = .resolving(head: head, parts: parts)
            return .none
        case .connecting(let head, var parts):
            phase = .idle
            parts.append(.body(chunk))
            phase = .connecting(head: head, parts: parts)
            return .none
        case .streaming:
            keepForResending(.body(chunk))
            return .forwardBody(chunk)
        default:
            return .none
        }
    }

    /// Adds a part of the request being sent to ``resendable``, unless the request is too large
    /// to keep.
    private mutating func keepForResending(_ part: HTTPServerRequestPart) {
        guard var kept = resendable else { return }
        resendable = nil  // lets `kept.body` grow without a copy
        switch part {
        case .body(let chunk):
            guard kept.body.readableBytes + chunk.readableBytes <= Self.resendableBodySize else { return }
            var chunk = chunk
            kept.body.writeBuffer(&chunk)
        case .end(let trailers):
            let size = trailers.map { $0.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count } } ?? 0
            guard kept.body.readableBytes + size <= Self.resendableBodySize else { return }
            kept.ended = .some(trailers)
        case .head:
            return
        }
        resendable = kept
    }

    /// The kept request's parts, to be sent again.
    private var resendableParts: [HTTPServerRequestPart]? {
        guard let kept = resendable, let trailers = kept.ended else { return nil }
        return (kept.body.readableBytes > 0 ? [.body(kept.body)] : []) + [.end(trailers)]
    }

    mutating func requestEnd(_ trailers: HTTPHeaders?) -> Action {
        guard queued.isEmpty else { return queue(.end(trailers)) }
        switch phase {
        case .idle, .tunnel:
            return .none
        case .local(let head, let body):
            requestEnded = true
            phase = .respondingLocally
            return .respondLocally(head, body: body)
        case .resolving(let head, var parts):
            requestEnded = true
            phase = .idle
            parts.append(.end(trailers))
            phase = .resolving(head: head, parts: parts)
            return .none
        case .connecting(let head, var parts):
            requestEnded = true
            phase = .idle
            parts.append(.end(trailers))
            phase = .connecting(head: head, parts: parts)
            return .none
        case .streaming:
            requestEnded = true
            keepForResending(.end(trailers))
            return .forwardEnd(trailers, next: finishIfDone())
        case .discarding:
            requestEnded = true
            return finishIfDone().map { .finish($0) } ?? .none
        case .respondingLocally, .switchingProtocols:
            requestEnded = true
            return .none
        }
    }

    /// Whether a `Connection` header names a field that frames the message.
    static func connectionNamesFraming(_ headers: HTTPHeaders) -> Bool {
        guard headers.contains(name: "Connection") else { return false }
        return headers[canonicalForm: "connection"].contains { token in
            HeaderName.equals(String(token), "content-length") || HeaderName.equals(String(token), "transfer-encoding")
        }
    }

    /// 413 at once, and the connection closes after it: the rest of the body is never read.
    private mutating func refuseTooLarge() -> Action {
        keepAlive = false
        requestEnded = true
        phase = .respondingLocally
        return .respond(ownResponse(.text(.payloadTooLarge, "request body over \(Self.maximumBodySize) bytes\n")))
    }

    /// The client shut down its sending side (`shutdown(SHUT_WR)`, as some scripts and
    /// HTTP/1.0 tools do): it still gets its answers, then the connection closes.
    mutating func clientInputClosed() -> Action {
        inputClosed = true
        if case .idle = phase, queued.isEmpty { return .close }
        return .none
    }

    /// The node is stopping: an idle connection closes now; one in the middle of an exchange
    /// finishes it, with `Connection: close` when its head is not written yet, and closes.
    /// (A tunnel has no exchanges: it ends with its session, or at the server's deadline.)
    mutating func quiesce() -> Action {
        quiescing = true
        keepAlive = false
        if case .idle = phase { return .close }
        return .none
    }

    /// The client's connection is gone.
    mutating func clientClosed() -> Action {
        if case .tunnel = phase { return .none }
        upstreamKey = nil
        responseDeadline = nil
        return .closeUpstream
    }

    private mutating func queue(_ part: HTTPServerRequestPart) -> Action {
        if case .tunnel = phase { return .none }
        queued.append(part)
        return .none
    }

    // MARK: the node's own answer

    /// The node's own response to the request of ``Action/respondLocally(_:body:)``.
    mutating func localResponse(_ response: HTTPResponse) -> Action {
        guard case .respondingLocally = phase else { return .none }
        return .respond(ownResponse(response))
    }

    // MARK: the destination

    /// The destination is being decided off the event loop: the request's further parts wait.
    mutating func resolutionDeferred() {
        if case .resolving = phase { awaitingUpstream = true }
    }

    /// The request is answered without the session.
    mutating func decided(_ response: HTTPResponse) -> Action {
        guard case .resolving = phase else { return .none }
        awaitingUpstream = false
        return .respond(ownResponse(response))
    }

    /// The request goes to `upstream` as `head` (the client's, with the proxy's headers).
    /// - Parameter upstreamActive: whether the connection to the current upstream is open.
    mutating func forward(_ head: HTTPRequestHead, to upstream: Upstream, tls: NIOSSLContext?, upstreamActive: Bool,
                          now: NIODeadline) -> Action {
        guard case .resolving(_, let parts) = phase else { return .none }
        let key = UpstreamKey(upstream: upstream, tls: tls.map(ObjectIdentifier.init))
        if upstreamKey == key, upstreamActive {
            return send(head, parts: parts, now: now)
        }
        let closingCurrent = upstreamKey != nil
        upstreamKey = nil
        phase = .connecting(head: head, parts: parts)
        awaitingUpstream = true
        pendingKey = key
        return .connect(upstream, tls: tls, closingCurrent: closingCurrent)
    }

    /// The key of the upstream being connected.
    private var pendingKey: UpstreamKey?

    /// The request is another node's verified opening (``HopOpening``): connect the session's
    /// socket, then answer `101` and pass bytes. An opening has no body and nothing may follow it
    /// before the `101`: anything else is refused.
    mutating func splice(to upstream: Upstream) -> Action {
        guard case .resolving(let head, let parts) = phase else { return .none }
        guard requestEnded, parts.count == 1, queued.isEmpty else {
            keepAlive = false
            return .respond(ownResponse(.text(.badRequest, "an opening of a session hop has no body, and nothing follows it before its 101\n")))
        }
        let closingCurrent = upstreamKey != nil
        upstreamKey = nil
        isSplice = true
        phase = .connecting(head: head, parts: [])
        awaitingUpstream = true
        pendingKey = UpstreamKey(upstream: upstream, tls: nil)
        return .connect(upstream, tls: nil, closingCurrent: closingCurrent)
    }

    mutating func upstreamConnected(now: NIODeadline) -> Action {
        guard case .connecting(let head, let parts) = phase else { return .closeNewUpstream }
        upstreamKey = pendingKey
        pendingKey = nil
        if isSplice {
            awaitingUpstream = false
            responseStarted = true
            phase = .switchingProtocols
            return .acceptSplice
        }
        return send(head, parts: parts, now: now)
    }

    /// - Parameter gone: no listener is there (connection refused, no such socket): the session
    ///   stopped listening, as it does when it is suspended or moved. Else (a full queue, a
    ///   listener that is not the session's) the session is there and does not answer.
    mutating func upstreamConnectFailed(gone: Bool = false) -> Action {
        guard case .connecting(_, let parts) = phase else { return .none }
        pendingKey = nil
        // Nothing of the request reached the session: it may be moving. Ask again where it is.
        if gone, let again = sendAgain(parts) { return again }
        awaitingUpstream = false
        // A hop's far end tells the node the client reached, which asks again.
        let headers: HTTPHeaders = isSplice && gone ? [SessionProxyResolver.hopGoneHeader: "1"] : [:]
        return .reportUpstreamFailure(ownResponse(.text(.badGateway, "502 bad gateway: the session does not answer; retry in a moment\n", headers: headers)))
    }

    /// The node an upstream ``Upstream/node(host:port:name:connectTimeout:opening:)`` goes to
    /// did not accept the opening: its answer (`response`) is the client's. Unless the node
    /// said the session `moved` (its route here was older than the move): nothing of the
    /// request has left this node, so its destination is asked again, once.
    mutating func upstreamRefused(_ response: HTTPResponse, moved: Bool = false, gone: Bool = false) -> Action {
        guard case .connecting(_, let parts) = phase else { return .none }
        pendingKey = nil
        if moved, !askedAgain, let clientHead {
            askedAgain = true
            awaitingUpstream = true
            phase = .resolving(head: clientHead, parts: parts)
            return .resolve(clientHead)
        }
        // The owner found its session's listener gone (it is being suspended or moved).
        if gone, let again = sendAgain(parts) { return again }
        awaitingUpstream = false
        return .reportUpstreamFailure(ownResponse(response))
    }

    /// The request's session could not be reached, or hung up without a byte of answer: unless
    /// it was sent again ``resendLimit`` times already, its destination is decided again after a
    /// wait (the session may be suspending, or starting on another node), and `parts` (its body
    /// and end, as far as they arrived) go with it. A hop's far end (a splice) leaves this to the
    /// node the client reached.
    ///
    /// Sending a request again is safe only when the session did not act on it: it could not be
    /// reached, or it ended the connection without answering anything. A session program must
    /// answer every request it acts on (docs/PROTOCOL.md, "Sessions"), as HTTP servers do.
    private mutating func sendAgain(_ parts: [HTTPServerRequestPart]) -> Action? {
        guard !isSplice, resends < Self.resendLimit, let clientHead else { return nil }
        resends += 1
        resendable = nil
        responseDeadline = nil
        awaitingUpstream = true
        phase = .resolving(head: clientHead, parts: parts)
        return .resolveAgain(clientHead, after: .milliseconds(resends <= 4 ? 100 << (resends - 1) : 1000))
    }

    private mutating func send(_ head: HTTPRequestHead, parts: [HTTPServerRequestPart], now: NIODeadline) -> Action {
        // A small request is kept until the session answers, to be sent again should it hang up
        // first; what of it is still to come is added as it is forwarded.
        resendable = nil
        if !upgradeRequested, !isSplice {
            resendable = (ByteBuffer(), nil)
            for part in parts { keepForResending(part) }
        }
        phase = .streaming
        awaitingUpstream = false
        upstreamFull = false
        // A request sent again keeps its first deadline: resending never extends the exchange.
        let deadline = exchangeDeadline ?? now + responseTimeout
        exchangeDeadline = deadline
        responseDeadline = deadline
        let arm = !timerArmed
        timerArmed = true
        return .send(head, parts: parts, timerDeadline: arm ? deadline : nil)
    }

    // MARK: the upstream's answer

    mutating func upstreamHead(_ head: UpstreamResponseHead) -> Action {
        guard case .streaming = phase else { return .none }
        if head.isInformational {
            // An HTTP/1.0 client does not know them (RFC 9110 section 15.2).
            return version == .http1_0 ? .none : .writeBytes(head.forwarded(sessionPath: sessionPath, connection: nil))
        }
        if head.framing == .switched, !upgradeRequested {
            upstreamKey = nil
            return .abandonUpstream(ownResponse(.text(.badGateway, "502 bad gateway: the session switched protocols unasked\n")))
        }
        responseStarted = true
        responseDeadline = nil
        resendable = nil
        if head.framing == .switched {
            phase = .switchingProtocols
            return .writeHead(head.forwarded(sessionPath: sessionPath, connection: nil), status: head.status)
        }
        // A body that ends with the connection (or chunks passed to an HTTP/1.0 client as
        // their data alone) ends the client's connection too.
        if head.closesClientConnection { keepAlive = false }
        let connection: StaticString? = !keepAlive ? "close" : version == .http1_0 ? "keep-alive" : nil
        return .writeHead(head.forwarded(sessionPath: sessionPath, connection: connection), status: head.status)
    }

    mutating func upstreamBody(_ chunk: ByteBuffer) -> Action {
        switch phase {
        case .streaming, .switchingProtocols: .writeBytes(chunk)
        default: .none
        }
    }

    mutating func upstreamEnd() -> Action {
        switch phase {
        case .switchingProtocols:
            return .writeEndThenOpenTunnel
        case .streaming:
            responseEnded = true
            return .writeEnd(next: finishIfDone() ?? .awaitRequestEnd)
        default:
            return .none
        }
    }

    /// The session's answer is not HTTP this proxy passes on (``UpstreamResponseFramer/Failure``):
    /// 502 when nothing of it was written yet, else the client's connection closes (its answer
    /// cannot be completed).
    mutating func upstreamMalformed(_ failure: UpstreamResponseFramer.Failure) -> Action {
        guard case .streaming = phase else { return .none }
        upstreamKey = nil
        upstreamFull = false
        guard !responseStarted else { return .close }
        return .abandonUpstream(ownResponse(.text(.badGateway, "502 bad gateway: the session's answer is malformed: \(failure)\n")))
    }

    /// The upstream closes after the answer just read (it said so): the next request connects anew.
    mutating func upstreamRetired() {
        upstreamKey = nil
        upstreamFull = false
    }

    /// The `101`'s end is written.
    mutating func tunnelReady() -> Action {
        guard case .switchingProtocols = phase, upstreamKey != nil else { return .none }
        phase = .tunnel
        upstreamKey = nil
        responseDeadline = nil
        return .openTunnel
    }

    /// Whether the upstream takes more of the request's bytes.
    mutating func upstreamWritabilityChanged(_ writable: Bool) {
        upstreamFull = !writable
    }

    /// The connected upstream closed.
    mutating func upstreamClosed() -> Action {
        guard upstreamKey != nil else { return .none }
        upstreamKey = nil
        upstreamFull = false
        guard case .streaming = phase else { return .none }
        if !responseStarted {
            // Nothing answered: the session ended the connection without acting on the request.
            if requestEnded, let parts = resendableParts, let again = sendAgain(parts) { return again }
            return .reportUpstreamFailure(ownResponse(.text(.badGateway, "502 bad gateway: the session closed the connection\n")))
        }
        return responseEnded ? .none : .close
    }

    // MARK: the response timer

    mutating func timerFired(now: NIODeadline) -> Action {
        timerArmed = false
        guard let deadline = responseDeadline else { return .none }
        guard deadline <= now else {
            timerArmed = true
            return .scheduleTimer(deadline)
        }
        responseDeadline = nil
        guard case .streaming = phase, !responseStarted else { return .none }
        upstreamKey = nil
        let seconds = responseTimeout.nanoseconds / 1_000_000_000
        return .abandonUpstream(ownResponse(.text(
            .gatewayTimeout, "504 gateway timeout: the session did not answer within \(seconds) s (session-response-timeout)\n")))
    }

    // MARK: finishing an exchange

    /// Completes `response` for the exchange in progress (its length, and `Connection: close`
    /// when the client asked for it) and marks the response written.
    private mutating func ownResponse(_ response: HTTPResponse) -> OwnResponse {
        var headers = response.headers
        headers.replaceOrAdd(name: "Content-Length", value: String(response.body.readableBytes))
        // Drover's own pages and answers cannot be framed by another site (clickjacking the
        // admin dashboard's buttons) nor sniffed as another type. A session's answers are the
        // program's own business and do not come through here.
        if !headers.contains(name: "Content-Security-Policy") { headers.add(name: "Content-Security-Policy", value: "frame-ancestors 'none'") }
        headers.replaceOrAdd(name: "X-Frame-Options", value: "DENY")
        headers.replaceOrAdd(name: "X-Content-Type-Options", value: "nosniff")
        if !keepAlive { headers.replaceOrAdd(name: "Connection", value: "close") }
        responseStarted = true
        responseEnded = true
        responseDeadline = nil
        resendable = nil
        switch phase {
        case .resolving, .connecting, .streaming: phase = .discarding
        default: break
        }
        return OwnResponse(head: HTTPResponseHead(version: version, status: response.status, headers: headers),
                           body: response.body, next: finishIfDone() ?? .awaitRequestEnd)
    }

    /// Once both the request and its response are complete: what comes next, or nil.
    private mutating func finishIfDone() -> Next? {
        guard requestEnded, responseEnded else { return nil }
        responseDeadline = nil
        phase = .idle
        if !keepAlive || (inputClosed && queued.isEmpty) { return .close }
        let replay = queued
        queued = []
        return .nextRequest(replay: replay)
    }
}

/// What an upstream connection is reused for: the same place, over the same TLS context.
struct UpstreamKey: Equatable {
    let upstream: Upstream
    let tls: ObjectIdentifier?
}

extension ProxyConnectionStateMachine.OwnResponse: Equatable {
    static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.head == rhs.head && lhs.body == rhs.body && lhs.next == rhs.next
    }
}

/// The names of the handlers in a node's connection pipelines, shared by the code that adds
/// them and the code that takes them out when a connection becomes a tunnel.
enum PipelineHandlerName {
    static let decoder = "http-decoder"
    static let router = "router"
    static let upstream = "upstream"
}

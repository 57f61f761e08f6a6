import DroverKernel
@testable import DroverServer
import NIOCore
import NIOHTTP1
import Testing

/// Every state and transition of a client connection, without sockets: events in, actions out.
@Suite struct ProxyConnectionStateMachineTests {
    typealias Machine = ProxyConnectionStateMachine
    typealias Action = ProxyConnectionStateMachine.Action

    static let timeout = TimeAmount.seconds(60)
    static let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    static let session = Upstream.unix(path: "/run/drover/s/abc.sock")
    static let otherNode = Upstream.tcp(host: "127.0.0.2", port: 8787)

    static func head(_ uri: String, keepAlive: Bool = true, headers: HTTPHeaders = [:]) -> HTTPRequestHead {
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: uri, headers: headers)
        if !keepAlive { head.headers.add(name: "Connection", value: "close") }
        return head
    }

    static func body(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

    /// A session's answer head as the framer reads it from `text`.
    static func answerHead(_ text: String) -> UpstreamResponseHead {
        var framer = UpstreamResponseFramer()
        framer.expect(method: .GET, dechunk: false)
        framer.receive(ByteBuffer(string: text))
        guard case .head(let head) = try? framer.next() else { preconditionFailure("not a response head: \(text)") }
        return head
    }

    static let ok = answerHead("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
    static let switching = answerHead("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")

    /// A machine with a proxied request of `uri` sent to `upstream` over a new connection.
    static func streaming(_ uri: String = "/s/abc/x", to upstream: Upstream = session, headers: HTTPHeaders = [:],
                          end: Bool = true) -> Machine {
        var machine = Machine(responseTimeout: timeout)
        _ = machine.requestHead(head(uri, headers: headers), proxied: true)
        if end { _ = machine.requestEnd(nil) }
        _ = machine.forward(head(uri, headers: headers), to: upstream, tls: nil, upstreamActive: false, now: start)
        _ = machine.upstreamConnected(now: start)
        return machine
    }

    static func ownResponse(_ action: Action) -> Machine.OwnResponse? {
        switch action {
        case .respond(let response), .reportUpstreamFailure(let response), .abandonUpstream(let response): response
        default: nil
        }
    }

    // MARK: a stopping node

    @Test func aStoppingNodeClosesAnIdleConnectionAtOnce() {
        var machine = Machine(responseTimeout: Self.timeout)
        guard case .close = machine.quiesce() else { Issue.record("an idle connection stays open"); return }
    }

    @Test func aStoppingNodeFinishesTheExchangeInProgressWithConnectionCloseThenCloses() throws {
        var local = Machine(responseTimeout: Self.timeout)
        _ = local.requestHead(Self.head("/api/sessions"), proxied: false)
        guard case .none = local.quiesce() else { Issue.record("a request in progress was cut"); return }
        guard case .respondLocally = local.requestEnd(nil) else { Issue.record("end"); return }
        let response = try #require(Self.ownResponse(local.localResponse(.text(.ok, "fine\n"))))
        #expect(response.head.headers["Connection"] == ["close"])
        #expect(response.next == .close)

        var proxied = Self.streaming()
        guard case .none = proxied.quiesce() else { Issue.record("a proxied exchange was cut"); return }
        guard case .writeHead(let written, _) = proxied.upstreamHead(Self.ok) else {
            Issue.record("head"); return
        }
        #expect(Self.answerHead(String(buffer: written)).headers["Connection"] == ["close"])
        guard case .writeEnd(let next) = proxied.upstreamEnd() else { Issue.record("end"); return }
        #expect(next == .close)
    }

    // MARK: the node's own endpoints

    @Test func aLocalRequestIsCollectedThenAnsweredWithItsLength() throws {
        var machine = Machine(responseTimeout: Self.timeout)
        let head = Self.head("/api/sessions")
        guard case .none = machine.requestHead(head, proxied: false) else { Issue.record("head"); return }
        guard case .none = machine.requestBody(Self.body("ab")) else { Issue.record("body"); return }
        guard case .none = machine.requestBody(Self.body("cd")) else { Issue.record("body"); return }
        guard case .respondLocally(let asked, let body) = machine.requestEnd(nil) else { Issue.record("end"); return }
        #expect(asked == head)
        #expect(body == Self.body("abcd"))
        let response = try #require(Self.ownResponse(machine.localResponse(.text(.ok, "fine\n"))))
        #expect(response.head.status == .ok)
        #expect(response.head.headers["Content-Length"] == ["5"])
        #expect(!response.head.headers.contains(name: "Connection"))
        #expect(response.next == .nextRequest(replay: []))
        guard case .idle = machine.phase else { Issue.record("not idle: \(machine.phase)"); return }
    }

    @Test func aBodyThatGrowsOverTheLimitIsRefusedWith413AtOnceAndTheConnectionCloses() throws {
        var machine = Machine(responseTimeout: Self.timeout)
        _ = machine.requestHead(Self.head("/api/sessions"), proxied: false)
        #expect(machine.requestBody(ByteBuffer(repeating: 0x61, count: Machine.maximumBodySize)).isNone)
        let response = try #require(Self.ownResponse(machine.requestBody(Self.body("x"))), "413 as soon as the body passes the cap")
        #expect(response.head.status == .payloadTooLarge)
        #expect(response.head.headers["Connection"] == ["close"])
        #expect(response.next == .close)
        #expect(machine.requestBody(Self.body("more")).isNone)
        #expect(machine.requestEnd(nil).isNone)
        #expect(machine.localResponse(.text(.ok, "late")).isNone)
    }

    @Test func aBodyAnnouncedOverTheLimitIsRefusedWith413BeforeAnyOfItArrives() throws {
        var machine = Machine(responseTimeout: Self.timeout)
        var head = Self.head("/api/sessions")
        head.headers.replaceOrAdd(name: "Content-Length", value: String(Machine.maximumBodySize + 1))
        let response = try #require(Self.ownResponse(machine.requestHead(head, proxied: false)))
        #expect(response.head.status == .payloadTooLarge)
        #expect(response.next == .close)
    }

    @Test func aClientThatAsksToCloseIsClosedAfterItsAnswer() throws {
        var machine = Machine(responseTimeout: Self.timeout)
        _ = machine.requestHead(Self.head("/health-check", keepAlive: false), proxied: false)
        _ = machine.requestEnd(nil)
        let response = try #require(Self.ownResponse(machine.localResponse(.text(.ok, "ok"))))
        #expect(response.head.headers["Connection"] == ["close"])
        #expect(response.next == .close)
    }

    @Test func aPipelinedRequestWaitsWithReadsPausedThenIsReplayedInOrder() throws {
        var machine = Machine(responseTimeout: Self.timeout)
        _ = machine.requestHead(Self.head("/one"), proxied: false)
        _ = machine.requestEnd(nil)
        #expect(machine.wantsReads)
        let second = Self.head("/two")
        #expect(machine.requestHead(second, proxied: false).isNone)
        #expect(!machine.wantsReads)
        #expect(machine.requestBody(Self.body("2")).isNone)
        #expect(machine.requestEnd(nil).isNone)
        let response = try #require(Self.ownResponse(machine.localResponse(.text(.ok, "one"))))
        #expect(response.next == .nextRequest(replay: [.head(second), .body(Self.body("2")), .end(nil)]))
        #expect(machine.wantsReads)
    }

    @Test func aHalfClosedClientGetsItsAnswerThenTheConnectionCloses() throws {
        var machine = Machine(responseTimeout: Self.timeout)
        guard case .close = machine.clientInputClosed() else { Issue.record("an idle half-closed connection stays open"); return }
        machine = Machine(responseTimeout: Self.timeout)
        _ = machine.requestHead(Self.head("/one"), proxied: false)
        _ = machine.requestEnd(nil)
        #expect(machine.clientInputClosed().isNone)
        let response = try #require(Self.ownResponse(machine.localResponse(.text(.ok, "one"))))
        #expect(response.next == .close)
    }

    // MARK: deciding and connecting

    @Test func aProxiedRequestWaitsForItsDestinationThenForItsUpstream() throws {
        var machine = Machine(responseTimeout: Self.timeout)
        let head = Self.head("/s/abc/x")
        guard case .resolve(let asked) = machine.requestHead(head, proxied: true) else { Issue.record("no resolve"); return }
        #expect(asked == head)
        machine.resolutionDeferred()
        #expect(!machine.wantsReads)
        #expect(machine.requestBody(Self.body("early")).isNone)
        guard case .connect(let target, let tls, let closingCurrent) =
                machine.forward(head, to: Self.session, tls: nil, upstreamActive: false, now: Self.start) else {
            Issue.record("no connect"); return
        }
        #expect(target == Self.session)
        #expect(tls == nil)
        #expect(!closingCurrent)
        #expect(!machine.wantsReads, "reads stay paused while the upstream connects")
        #expect(machine.requestEnd(nil).isNone)
        guard case .send(let sent, let parts, let deadline) = machine.upstreamConnected(now: Self.start) else {
            Issue.record("no send"); return
        }
        #expect(sent == head)
        #expect(parts == [.body(Self.body("early")), .end(nil)])
        #expect(deadline == Self.start + Self.timeout)
        #expect(machine.wantsReads)
        #expect(machine.isStreaming)
    }

    @Test func theSameUpstreamIsReusedAndAnotherOneReplacesIt() throws {
        var machine = Self.streaming()
        _ = machine.upstreamHead(Self.ok)
        guard case .writeEnd(.nextRequest([])) = machine.upstreamEnd() else { Issue.record("no end"); return }

        _ = machine.requestHead(Self.head("/s/abc/y"), proxied: true)
        guard case .send(_, _, let deadline) = machine.forward(Self.head("/s/abc/y"), to: Self.session, tls: nil,
                                                                upstreamActive: true, now: Self.start) else {
            Issue.record("the open upstream was not reused"); return
        }
        #expect(deadline == nil, "the armed timer is moved on lazily, not scheduled again")
        _ = machine.upstreamHead(Self.ok)
        _ = machine.requestEnd(nil)
        _ = machine.upstreamEnd()

        _ = machine.requestHead(Self.head("/s/def/y"), proxied: true)
        guard case .connect(let target, _, let closingCurrent) = machine.forward(Self.head("/s/def/y"), to: Self.otherNode, tls: nil,
                                                                               upstreamActive: true, now: Self.start) else {
            Issue.record("another destination did not connect"); return
        }
        #expect(target == Self.otherNode)
        #expect(closingCurrent)

        var closed = Self.streaming()
        _ = closed.upstreamHead(Self.ok)
        _ = closed.upstreamEnd()
        _ = closed.requestHead(Self.head("/s/abc/y"), proxied: true)
        guard case .connect = closed.forward(Self.head("/s/abc/y"), to: Self.session, tls: nil, upstreamActive: false, now: Self.start) else {
            Issue.record("a closed upstream was reused"); return
        }
    }

    @Test func aDecisionToAnswerDropsTheRestOfTheRequest() throws {
        var machine = Machine(responseTimeout: Self.timeout)
        _ = machine.requestHead(Self.head("/s/gone/x"), proxied: true)
        machine.resolutionDeferred()
        let response = try #require(Self.ownResponse(machine.decided(.text(.notFound, "no such session\n"))))
        #expect(response.head.status == .notFound)
        #expect(response.next == .awaitRequestEnd)
        #expect(machine.wantsReads, "the rest of the body is read to be dropped")
        #expect(machine.requestBody(Self.body("dropped")).isNone)
        guard case .finish(.nextRequest([])) = machine.requestEnd(nil) else { Issue.record("not finished"); return }
    }

    @Test func anUpstreamThatCannotBeReachedIsAskedForAgainForTenSecondsThen502() throws {
        var machine = Machine(responseTimeout: Self.timeout)
        _ = machine.requestHead(Self.head("/s/abc/x"), proxied: true)
        _ = machine.requestEnd(nil)
        // Nothing of the request left the node: its session is looked for again after 0.1, 0.2,
        // 0.4 and 0.8 s, then every second (it may be moving), and the request waits meanwhile.
        for wait in [100, 200, 400, 800] + Array(repeating: 1000, count: 9) {
            _ = machine.forward(Self.head("/s/abc/x"), to: Self.session, tls: nil, upstreamActive: false, now: Self.start)
            guard case .resolveAgain(let head, let after) = machine.upstreamConnectFailed(gone: true) else { Issue.record("not asked again"); return }
            #expect(head.uri == "/s/abc/x" && after == .milliseconds(Int64(wait)))
            #expect(!machine.wantsReads, "the request waits for its destination")
        }
        _ = machine.forward(Self.head("/s/abc/x"), to: Self.session, tls: nil, upstreamActive: false, now: Self.start)
        guard case .reportUpstreamFailure(let response) = machine.upstreamConnectFailed(gone: true) else { Issue.record("not reported"); return }
        #expect(response.head.status == .badGateway)
        #expect(response.next == .nextRequest(replay: []))
        #expect(machine.upstreamKey == nil)
        #expect(machine.timerFired(now: Self.start + .seconds(120)).isNone)

        // A session that is there but does not take the connection (its queue is full, or what
        // listens is not the session's): 502 at once, nothing waits on it.
        var jammed = Machine(responseTimeout: Self.timeout)
        _ = jammed.requestHead(Self.head("/s/abc/x"), proxied: true)
        _ = jammed.requestEnd(nil)
        _ = jammed.forward(Self.head("/s/abc/x"), to: Self.session, tls: nil, upstreamActive: false, now: Self.start)
        guard case .reportUpstreamFailure = jammed.upstreamConnectFailed(gone: false) else { Issue.record("a jammed session was waited for"); return }

        // A hop's far end finds the session's listener gone: it does not wait, it tells.
        var splice = Machine(responseTimeout: Self.timeout)
        _ = splice.requestHead(Self.head("/s/abc/"), proxied: true)
        _ = splice.requestEnd(nil)
        _ = splice.splice(to: Self.session)
        guard case .reportUpstreamFailure(let told) = splice.upstreamConnectFailed(gone: true) else { Issue.record("the far end waited"); return }
        #expect(told.head.headers["X-Drover-Hop-Gone"] == ["1"])
    }

    @Test func anUpstreamConnectedAfterTheClientWasAnsweredIsClosed() {
        var machine = Machine(responseTimeout: Self.timeout)
        _ = machine.requestHead(Self.head("/s/abc/x"), proxied: true)
        _ = machine.forward(Self.head("/s/abc/x"), to: Self.session, tls: nil, upstreamActive: false, now: Self.start)
        _ = machine.upstreamConnectFailed()
        guard case .closeNewUpstream = machine.upstreamConnected(now: Self.start) else { Issue.record("kept"); return }
    }

    // MARK: the session's answer

    @Test func theResponseStreamsBackAndKeepsTheConnectionOpen() throws {
        var machine = Self.streaming(end: false)
        guard case .forwardBody(let chunk) = machine.requestBody(Self.body("up")) else { Issue.record("not forwarded"); return }
        #expect(chunk == Self.body("up"))
        guard case .writeHead(let written, _) = machine.upstreamHead(Self.ok) else {
            Issue.record("head"); return
        }
        #expect(Self.answerHead(String(buffer: written)).status == 200)
        guard case .writeBytes = machine.upstreamBody(Self.body("down")) else { Issue.record("body"); return }
        guard case .writeEnd(.awaitRequestEnd) = machine.upstreamEnd() else { Issue.record("end before request end"); return }
        guard case .forwardEnd(nil, .nextRequest([])?) = machine.requestEnd(nil) else { Issue.record("request end"); return }
    }

    @Test func aClientThatAsksToCloseGetsConnectionCloseOnTheSessionsAnswer() throws {
        var machine = Machine(responseTimeout: Self.timeout)
        _ = machine.requestHead(Self.head("/s/abc/x", keepAlive: false), proxied: true)
        _ = machine.requestEnd(nil)
        _ = machine.forward(Self.head("/s/abc/x"), to: Self.session, tls: nil, upstreamActive: false, now: Self.start)
        _ = machine.upstreamConnected(now: Self.start)
        guard case .writeHead(let written, _) = machine.upstreamHead(Self.ok) else {
            Issue.record("head"); return
        }
        #expect(Self.answerHead(String(buffer: written)).headers["Connection"] == ["close"])
        guard case .writeEnd(.close) = machine.upstreamEnd() else { Issue.record("not closed"); return }
    }

    @Test func aSessionThatHangsUpBeforeAnsweringGetsTheWholeRequestAgainThen502AndMidAnswerClosesTheClient() throws {
        // A whole request the session hung up on without a byte of answer is sent again, body
        // and all, to wherever the session is then.
        var before = Machine(responseTimeout: Self.timeout)
        _ = before.requestHead(Self.head("/s/abc/x", headers: ["Content-Length": "4"]), proxied: true)
        _ = before.requestBody(Self.body("body"))
        _ = before.requestEnd(nil)
        for _ in 0..<Machine.resendLimit {
            _ = before.forward(Self.head("/s/abc/x"), to: Self.session, tls: nil, upstreamActive: false, now: Self.start)
            guard case .send(_, let parts, _) = before.upstreamConnected(now: Self.start) else { Issue.record("not sent"); return }
            #expect(parts.count == 2, "the body and the end go again")
            guard case .resolveAgain = before.upstreamClosed() else { Issue.record("not sent again"); return }
        }
        _ = before.forward(Self.head("/s/abc/x"), to: Self.session, tls: nil, upstreamActive: false, now: Self.start)
        _ = before.upstreamConnected(now: Self.start)
        guard case .reportUpstreamFailure(let response) = before.upstreamClosed() else { Issue.record("not reported"); return }
        #expect(response.head.status == .badGateway)
        #expect(response.next == .nextRequest(replay: []))

        // A request sent before its end arrived (its route was known at once, on a connection
        // kept open) is kept as it goes, and sent again once whole.
        var early = Machine(responseTimeout: Self.timeout)
        _ = early.requestHead(Self.head("/s/abc/x", headers: ["Content-Length": "4"]), proxied: true)
        _ = early.forward(Self.head("/s/abc/x"), to: Self.session, tls: nil, upstreamActive: false, now: Self.start)
        guard case .send(_, let none, _) = early.upstreamConnected(now: Self.start), none.isEmpty else { Issue.record("not sent at once"); return }
        _ = early.requestBody(Self.body("body"))
        _ = early.requestEnd(nil)
        guard case .resolveAgain = early.upstreamClosed() else { Issue.record("not sent again"); return }
        _ = early.forward(Self.head("/s/abc/x"), to: Self.session, tls: nil, upstreamActive: false, now: Self.start)
        guard case .send(_, let again, _) = early.upstreamConnected(now: Self.start), again.count == 2 else { Issue.record("not whole"); return }

        // What is kept is one buffer of its own, however the body came (a read buffer of the
        // client's is never held), and resending never moves the exchange's deadline.
        var pieces = Machine(responseTimeout: Self.timeout)
        _ = pieces.requestHead(Self.head("/s/abc/x", headers: ["Transfer-Encoding": "chunked"]), proxied: true)
        _ = pieces.forward(Self.head("/s/abc/x"), to: Self.session, tls: nil, upstreamActive: false, now: Self.start)
        _ = pieces.upstreamConnected(now: Self.start)
        for piece in ["a", "bc", "def"] { _ = pieces.requestBody(Self.body(piece)) }
        _ = pieces.requestEnd(["X-Trailer": "1"])
        guard case .resolveAgain = pieces.upstreamClosed() else { Issue.record("not sent again"); return }
        _ = pieces.forward(Self.head("/s/abc/x"), to: Self.session, tls: nil, upstreamActive: false, now: Self.start + .seconds(30))
        guard case .send(_, let kept, _) = pieces.upstreamConnected(now: Self.start + .seconds(30)),
              case .body(let whole) = kept.first, case .end(let trailers) = kept.last else { Issue.record("not whole"); return }
        #expect(kept.count == 2 && String(buffer: whole) == "abcdef" && trailers?["X-Trailer"] == ["1"])
        #expect(pieces.responseDeadline == Self.start + Self.timeout, "the deadline of the first sending holds")

        // A body over 64 KiB is not kept: such a request is 502 at once.
        var large = Machine(responseTimeout: Self.timeout)
        _ = large.requestHead(Self.head("/s/abc/x", headers: ["Content-Length": "70000"]), proxied: true)
        _ = large.requestBody(ByteBuffer(repeating: 0x61, count: 70_000))
        _ = large.requestEnd(nil)
        _ = large.forward(Self.head("/s/abc/x"), to: Self.session, tls: nil, upstreamActive: false, now: Self.start)
        _ = large.upstreamConnected(now: Self.start)
        guard case .reportUpstreamFailure = large.upstreamClosed() else { Issue.record("a large request was kept"); return }

        // Answered 502 while its body still arrives (it was not whole when sent): the timer must
        // not answer again (504).
        var midBody = Self.streaming(end: false)
        guard case .reportUpstreamFailure(let early) = midBody.upstreamClosed() else { Issue.record("not reported"); return }
        #expect(early.next == .awaitRequestEnd)
        #expect(midBody.timerFired(now: Self.start + .seconds(120)).isNone, "a request answered 502 gets no second answer, 504")
        guard case .finish(.nextRequest([])) = midBody.requestEnd(nil) else { Issue.record("the dropped body did not end the exchange"); return }

        var during = Self.streaming()
        _ = during.upstreamHead(Self.ok)
        guard case .close = during.upstreamClosed() else { Issue.record("a cut answer left the client waiting"); return }

        var after = Self.streaming()
        _ = after.upstreamHead(Self.ok)
        _ = after.upstreamEnd()
        #expect(after.upstreamClosed().isNone, "an idle upstream closing is no one's business")
    }

    @Test func theUpstreamFillingUpPausesTheClientsReads() {
        var machine = Self.streaming(end: false)
        machine.upstreamWritabilityChanged(false)
        #expect(!machine.wantsReads)
        machine.upstreamWritabilityChanged(true)
        #expect(machine.wantsReads)
    }

    // MARK: the response timer

    @Test func aSessionSilentPastTheResponseTimeoutGets504AndItsUpstreamDropped() throws {
        var machine = Self.streaming()
        guard case .scheduleTimer(let deadline) = machine.timerFired(now: Self.start + .seconds(30)) else {
            Issue.record("an early timer was not moved on"); return
        }
        #expect(deadline == Self.start + Self.timeout)
        guard case .abandonUpstream(let response) = machine.timerFired(now: Self.start + Self.timeout) else {
            Issue.record("no 504"); return
        }
        #expect(response.head.status == .gatewayTimeout)
        #expect(String(buffer: response.body).contains("session-response-timeout"))
        #expect(machine.upstreamKey == nil)
        #expect(machine.upstreamClosed().isNone, "the dropped upstream's closing is not a second answer")
    }

    @Test func aSessionThatStartedAnsweringIsNotCutOffByTheTimer() {
        var machine = Self.streaming()
        _ = machine.upstreamHead(Self.ok)
        #expect(machine.responseDeadline == nil)
        #expect(machine.timerFired(now: Self.start + .seconds(600)).isNone)
        guard case .writeBytes = machine.upstreamBody(Self.body("slow but sure")) else { Issue.record("body"); return }
    }

    @Test func theTimerIsMovedOnForTheNextRequestOnTheSameConnection() {
        var machine = Self.streaming()
        _ = machine.upstreamHead(Self.ok)
        _ = machine.upstreamEnd()
        let later = Self.start + .seconds(50)
        _ = machine.requestHead(Self.head("/s/abc/y"), proxied: true)
        _ = machine.requestEnd(nil)
        _ = machine.forward(Self.head("/s/abc/y"), to: Self.session, tls: nil, upstreamActive: true, now: later)
        guard case .scheduleTimer(let deadline) = machine.timerFired(now: Self.start + Self.timeout) else {
            Issue.record("the first request's deadline cut the second off"); return
        }
        #expect(deadline == later + Self.timeout)
    }

    // MARK: upgrades

    static let upgradeHeaders: HTTPHeaders = ["Connection": "Upgrade", "Upgrade": "websocket"]

    @Test func aSwitchingProtocolsAnswerToAnUpgradeOpensTheTunnel() throws {
        var machine = Self.streaming(headers: Self.upgradeHeaders)
        #expect(machine.upgradeRequested)
        guard case .writeHead(let written, _) = machine.upstreamHead(Self.switching) else {
            Issue.record("head"); return
        }
        #expect(Self.answerHead(String(buffer: written)).headers["Connection"] == ["Upgrade"])
        guard case .writeEndThenOpenTunnel = machine.upstreamEnd() else { Issue.record("no tunnel"); return }
        guard case .openTunnel = machine.tunnelReady() else { Issue.record("not opened"); return }
        #expect(machine.isTunnel)
        #expect(machine.requestHead(Self.head("/x"), proxied: false).isNone)
        #expect(machine.clientClosed().isNone, "the tunnel closes itself")
    }

    @Test func aSwitchingProtocolsAnswerNobodyAskedForIs502AndDropsTheUpstream() throws {
        var machine = Self.streaming()
        #expect(!machine.upgradeRequested)
        guard case .abandonUpstream(let response) = machine.upstreamHead(Self.switching) else { Issue.record("passed on"); return }
        #expect(response.head.status == .badGateway)
        #expect(response.next == .nextRequest(replay: []))
        #expect(machine.upstreamKey == nil)
    }

    /// The framer reads nothing after a request that switches protocols (what follows may be
    /// the new protocol's). When the answer does not switch, the connection cannot go on as HTTP:
    /// it closes after the answer, whether the session or Drover refused.
    @Test func aRefusedUpgradeClosesTheConnectionAfterItsAnswer() throws {
        var machine = Self.streaming(headers: Self.upgradeHeaders)
        guard case .writeHead(let written, _) = machine.upstreamHead(Self.answerHead("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")) else {
            Issue.record("head"); return
        }
        #expect(Self.answerHead(String(buffer: written)).headers["Connection"] == ["close"])
        guard case .writeEnd(let next) = machine.upstreamEnd() else { Issue.record("end"); return }
        #expect(next == .close)

        var local = Machine(responseTimeout: Self.timeout)
        _ = local.requestHead(Self.head("/nothing", headers: Self.upgradeHeaders), proxied: false)
        guard case .respondLocally = local.requestEnd(nil) else { Issue.record("not answered here"); return }
        let answer = try #require(Self.ownResponse(local.localResponse(.text(.notFound, "no\n"))))
        #expect(answer.head.headers["Connection"] == ["close"])
        #expect(answer.next == .close)

        // The framer's rule decides what switches (ClientRequestFramerTests): a `Connection`
        // member with a tab beside it names no option, so the framer reads on, and the request
        // is not forwarded as an upgrade.
        #expect(!Self.streaming(headers: ["Connection": "keep-alive,\tupgrade", "Upgrade": "websocket"]).upgradeRequested)
        // A CONNECT switches as the framer reads it (it closes after a refusal), but a session
        // may not tunnel it: its 101 is 502, as one nobody asked for.
        var connect = Machine(responseTimeout: Self.timeout)
        let connectHead = HTTPRequestHead(version: .http1_1, method: .CONNECT, uri: "/s/abc/x", headers: ["Host": "a"])
        _ = connect.requestHead(connectHead, proxied: true)
        _ = connect.requestEnd(nil)
        _ = connect.forward(connectHead, to: Self.session, tls: nil, upstreamActive: false, now: Self.start)
        _ = connect.upstreamConnected(now: Self.start)
        #expect(!connect.upgradeRequested)
        let unasked = try #require(Self.ownResponse(connect.upstreamHead(Self.switching)))
        #expect(unasked.head.status == .badGateway && unasked.next == .close)
        // An `Upgrade` header alone, without `Connection: upgrade`, switches nothing.
        var plain = Machine(responseTimeout: Self.timeout)
        _ = plain.requestHead(Self.head("/nothing", headers: ["Upgrade": "websocket"]), proxied: false)
        _ = plain.requestEnd(nil)
        #expect(try #require(Self.ownResponse(plain.localResponse(.text(.notFound, "no\n")))).next == .nextRequest(replay: []))
    }

    @Test func anUpstreamGoneBeforeTheTunnelOpensOpensNone() {
        var machine = Self.streaming(headers: Self.upgradeHeaders)
        _ = machine.upstreamHead(Self.switching)
        _ = machine.upstreamEnd()
        _ = machine.upstreamClosed()
        #expect(machine.tunnelReady().isNone)
    }

    @Test func aClientGoneMidExchangeClosesTheUpstream() {
        var machine = Self.streaming()
        guard case .closeUpstream = machine.clientClosed() else { Issue.record("upstream left open"); return }
        #expect(machine.upstreamKey == nil)
    }

    // MARK: session hops

    static func hop(_ session: String, user: String = "alice") -> Upstream {
        .node(host: "127.0.0.2", port: 8787, name: nil, connectTimeout: .seconds(2),
              opening: HopOpening(session: session, user: user) { ByteBuffer(string: "opening") })
    }

    /// A hop's connection is one session's of one user: a request for another session (or
    /// user) through the same node opens another.
    @Test func aHopConnectionServesOneSessionOfOneUser() {
        var machine = Self.streaming("/s/abc/x", to: Self.hop("abc"))
        _ = machine.upstreamHead(Self.ok)
        _ = machine.upstreamEnd()
        _ = machine.requestHead(Self.head("/s/abc/y"), proxied: true)
        guard case .send = machine.forward(Self.head("/s/abc/y"), to: Self.hop("abc"), tls: nil, upstreamActive: true, now: Self.start) else {
            Issue.record("the same session's hop was not reused"); return
        }
        _ = machine.requestEnd(nil)
        _ = machine.upstreamHead(Self.ok)
        _ = machine.upstreamEnd()
        for other in [Self.hop("def"), Self.hop("abc", user: "bob")] {
            var next = machine
            _ = next.requestHead(Self.head("/s/abc/z"), proxied: true)
            guard case .connect(let target, _, let closingCurrent) = next.forward(Self.head("/s/abc/z"), to: other, tls: nil,
                                                                                 upstreamActive: true, now: Self.start) else {
                Issue.record("\(other) reused another session's hop"); return
            }
            #expect(target == other && closingCurrent)
        }
    }

    /// The owner's side: a verified opening connects the session's socket, answers 101 and
    /// becomes a tunnel, without a WebSocket's bookkeeping.
    @Test func anAcceptedOpeningBecomesATunnelToTheSession() {
        var machine = Machine(responseTimeout: Self.timeout)
        _ = machine.requestHead(Self.head("/s/abc/"), proxied: true)
        _ = machine.requestEnd(nil)
        guard case .connect(let target, let tls, false) = machine.splice(to: Self.session), tls == nil else {
            Issue.record("an opening did not connect the session"); return
        }
        #expect(target == Self.session)
        #expect(!machine.wantsReads, "nothing is read before the 101")
        guard case .acceptSplice = machine.upstreamConnected(now: Self.start) else { Issue.record("no 101"); return }
        guard case .openTunnel = machine.tunnelReady() else { Issue.record("no tunnel"); return }
        #expect(machine.isTunnel && machine.isSplice)
        #expect(machine.wantsReads)
    }

    @Test func anOpeningWithABodyOrAfterTheSocketFailedIsAnsweredAndNotSpliced() {
        var withBody = Machine(responseTimeout: Self.timeout)
        _ = withBody.requestHead(Self.head("/s/abc/"), proxied: true)
        _ = withBody.requestBody(Self.body("x"))
        _ = withBody.requestEnd(nil)
        let refused = Self.ownResponse(withBody.splice(to: Self.session))
        #expect(refused?.head.status == .badRequest && refused?.next == .close, "\(String(describing: refused))")

        var unreachable = Machine(responseTimeout: Self.timeout)
        _ = unreachable.requestHead(Self.head("/s/abc/"), proxied: true)
        _ = unreachable.requestEnd(nil)
        _ = unreachable.splice(to: Self.session)
        guard case .reportUpstreamFailure(let failure) = unreachable.upstreamConnectFailed() else { Issue.record("no 502"); return }
        #expect(failure.head.status == .badGateway)
        #expect(!unreachable.isTunnel)
    }

    /// The client's side: the owner's refusal of the opening is the client's answer.
    @Test func aRefusedOpeningIsTheClientsAnswer() {
        var machine = Machine(responseTimeout: Self.timeout)
        _ = machine.requestHead(Self.head("/s/abc/x"), proxied: true)
        _ = machine.requestEnd(nil)
        _ = machine.forward(Self.head("/s/abc/x"), to: Self.hop("abc"), tls: nil, upstreamActive: false, now: Self.start)
        guard case .reportUpstreamFailure(let answer) = machine.upstreamRefused(.text(.notFound, "no such session\n")) else {
            Issue.record("the refusal was not reported"); return
        }
        #expect(answer.head.status == .notFound && answer.body == Self.body("no such session\n") && answer.next == .nextRequest(replay: []))
        #expect(machine.upstreamKey == nil)
    }

    /// A node that no longer has the session (it moved while the request was on its way):
    /// nothing of the request left this node, so its destination is asked again, once, with
    /// the body that arrived meanwhile; a second such refusal is the client's answer.
    @Test func aSessionThatMovedIsAskedForAgainOnce() {
        var machine = Machine(responseTimeout: Self.timeout)
        let head = Self.head("/s/abc/count")
        _ = machine.requestHead(head, proxied: true)
        _ = machine.requestBody(Self.body("1"))
        _ = machine.requestEnd(nil)
        _ = machine.forward(Self.head("/s/abc/count"), to: Self.hop("abc"), tls: nil, upstreamActive: false, now: Self.start)
        let moved = HTTPResponse.text(.serviceUnavailable, "moved; retry\n", headers: ["Retry-After": "1"])
        guard case .resolve(let again) = machine.upstreamRefused(moved, moved: true) else {
            Issue.record("the destination was not asked again"); return
        }
        #expect(again.uri == head.uri)
        guard case .connect = machine.forward(Self.head("/s/abc/count"), to: Self.hop("abc"), tls: nil, upstreamActive: false, now: Self.start) else {
            Issue.record("not forwarded after asking again"); return
        }
        guard case .send(_, let parts, _) = machine.upstreamConnected(now: Self.start) else { Issue.record("nothing sent"); return }
        #expect(parts.count == 2, "the body and its end, kept while the destination was asked again: \(parts)")

        var twice = Machine(responseTimeout: Self.timeout)
        _ = twice.requestHead(head, proxied: true)
        _ = twice.requestEnd(nil)
        _ = twice.forward(Self.head("/s/abc/count"), to: Self.hop("abc"), tls: nil, upstreamActive: false, now: Self.start)
        _ = twice.upstreamRefused(moved, moved: true)
        _ = twice.forward(Self.head("/s/abc/count"), to: Self.hop("abc"), tls: nil, upstreamActive: false, now: Self.start)
        guard case .reportUpstreamFailure(let answer) = twice.upstreamRefused(moved, moved: true) else {
            Issue.record("a second refusal was not the client's"); return
        }
        #expect(answer.head.status == .serviceUnavailable)
    }

    // MARK: the proxy's headers

    @Test func theForwardedRequestCarriesTheProxysHeadersAndNotTheSignInCookie() {
        let head = Self.head("/s/abc/x", headers: [
            "Host": "node1:8787", "Cookie": "other=1; \(SignInCookie.name)=secret; more=2", "Connection": "keep-alive",
            SessionProxyResolver.hopUserHeader: "root",
        ])
        let outgoing = ForwardedRequest.head(for: head, clientAddress: "127.0.0.9", isTLS: true, adding: [("X-Extra", "1")], upgrade: false)
        #expect(outgoing.headers["X-Forwarded-For"] == ["127.0.0.9"])
        #expect(outgoing.headers["X-Forwarded-Proto"] == ["https"])
        #expect(outgoing.headers["X-Forwarded-Host"] == ["node1:8787"])
        #expect(outgoing.headers["Cookie"] == ["other=1; more=2"])
        #expect(!outgoing.headers.contains(name: SessionProxyResolver.hopUserHeader), "a client may not claim a hop")
        #expect(!outgoing.headers.contains(name: "Connection"))
        #expect(outgoing.headers["X-Extra"] == ["1"])
        let upgrade = ForwardedRequest.head(for: Self.head("/s/abc/ws", headers: Self.upgradeHeaders), clientAddress: "127.0.0.9",
                                            isTLS: false, adding: [], upgrade: true)
        #expect(upgrade.headers["Connection"] == ["Upgrade"])
    }

    /// A client may send several `Cookie` headers: the sign-in cookie leaves each of them. And no
    /// header in Drover's `X-Drover-` namespace reaches a session, whatever its case.
    @Test func everyCookieHeaderLosesTheSignInCookieAndNoDroverHeaderPassesOn() {
        let head = Self.head("/s/abc/x", headers: HTTPHeaders([
            ("Host", "node1:8787"), ("Cookie", "a=1"), ("cookie", "\(SignInCookie.name)=secret; b=2"), ("COOKIE", "\(SignInCookie.name)=again"),
            ("x-drover-hop-user", "root"), ("X-DROVER-Anything", "1"), ("X-Droverish", "kept"), ("x-extra", "from the client"),
            // A framework that reads headers as CGI variables takes `_` for `-`.
            ("X_Drover_Hop_User", "root"), ("x_forwarded_for", "203.0.113.7"), ("X_Droverish", "kept"),
        ]))
        let outgoing = ForwardedRequest.head(for: head, clientAddress: "127.0.0.9", isTLS: false, adding: [], upgrade: false)
        #expect(outgoing.headers["Cookie"] == ["a=1", "b=2"])
        #expect(!outgoing.headers.contains { $0.value.contains(SignInCookie.name) })
        #expect(!outgoing.headers.contains { $0.name.lowercased().hasPrefix("x-drover-") })
        #expect(outgoing.headers["X-Droverish"] == ["kept"] && outgoing.headers["X_Droverish"] == ["kept"])
        #expect(!outgoing.headers.contains { $0.name.lowercased().hasPrefix("x_drover_") || $0.value == "203.0.113.7" })
        #expect(outgoing.headers["Host"] == ["node1:8787"])
        // The hop's own headers, added by the node, replace whatever the client sent.
        let hop = ForwardedRequest.head(for: head, clientAddress: "127.0.0.9", isTLS: false,
                                        adding: [(SessionProxyResolver.hopUserHeader, "alice"), ("X-Extra", "1")], upgrade: false)
        #expect(hop.headers[SessionProxyResolver.hopUserHeader] == ["alice"])
        #expect(hop.headers["X-Extra"] == ["1"])
        let underscored = ForwardedRequest.head(for: Self.head("/s/abc/x", headers: ["X_Session_Secret": "forged"]), clientAddress: "127.0.0.9",
                                                isTLS: false, adding: [("X-Session-Secret", "real")], upgrade: false)
        #expect(underscored.headers["X-Session-Secret"] == ["real"] && !underscored.headers.contains(name: "X_Session_Secret"))
    }

    @Test func hopByHopAndClientForwardingHeadersAreNotPassedOn() {
        let head = Self.head("/s/abc/x", headers: [
            "Host": "node1:8787", "Connection": "keep-alive, X-Secret", "X-Secret": "1", "Keep-Alive": "timeout=5", "TE": "trailers",
            "Trailer": "X-Sum", "Proxy-Authorization": "Basic eDp5", "Proxy-Connection": "keep-alive", "Upgrade": "h2c",
            "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "bank.example", "Forwarded": "for=1.2.3.4",
            "Accept": "*/*",
        ])
        let outgoing = ForwardedRequest.head(for: head, clientAddress: "127.0.0.9", isTLS: false, adding: [], upgrade: false)
        for name in ["Connection", "X-Secret", "Keep-Alive", "TE", "Trailer", "Proxy-Authorization", "Proxy-Connection", "Upgrade", "Forwarded"] {
            #expect(!outgoing.headers.contains(name: name), "\(name) passed on")
        }
        #expect(outgoing.headers["X-Forwarded-For"] == ["127.0.0.9"], "a client's X-Forwarded-For is not trusted")
        #expect(outgoing.headers["X-Forwarded-Proto"] == ["http"])
        #expect(outgoing.headers["X-Forwarded-Host"] == ["node1:8787"])
        #expect(outgoing.headers["Accept"] == ["*/*"])
        // A hop header earns nothing here: nodes reach each other's sessions on spliced hops,
        // whose requests are built by the first node as for a session of its own.
        let hop = Self.head("/s/abc/x", headers: [
            "Host": "node2:8787", SessionProxyResolver.hopHeader: "1", "X-Forwarded-For": "198.51.100.4",
            "X-Forwarded-Proto": "https", "X-Forwarded-Host": "cluster.example",
        ])
        let forwarded = ForwardedRequest.head(for: hop, clientAddress: "127.0.0.1", isTLS: false, adding: [], upgrade: false)
        #expect(forwarded.headers["X-Forwarded-For"] == ["127.0.0.1"])
        #expect(forwarded.headers["X-Forwarded-Proto"] == ["http"])
        #expect(forwarded.headers["X-Forwarded-Host"] == ["node2:8787"])
        #expect(!forwarded.headers.contains(name: SessionProxyResolver.hopHeader))
        // A WebSocket upgrade keeps Upgrade; another protocol's does not.
        let h2c = ForwardedRequest.head(for: Self.head("/s/abc/x", headers: ["Connection": "Upgrade", "Upgrade": "h2c"]), clientAddress: "127.0.0.9",
                                        isTLS: false, adding: [], upgrade: true)
        #expect(!h2c.headers.contains(name: "Upgrade"))
    }

    /// A session's framework may merge a request's trailers into its head (RFC 9110 section
    /// 6.5.2 lets a field's definition allow it): no field passes in a trailer that the proxy
    /// would not pass in the head.
    @Test func aTrailerCarriesNothingTheProxyWouldNotPassInTheHead() {
        let trailers = HTTPHeaders([
            ("X-Checksum", "abc"), ("x-drover-hop-user", "root"), ("X-Forwarded-For", "203.0.113.7"), ("Forwarded", "for=1.2.3.4"),
            ("Cookie", "\(SignInCookie.name)=secret"), ("Host", "bank.example"), ("Connection", "close"), ("Proxy-Authorization", "Basic eDp5"),
            ("Authorization", "token forged"), ("Server-Timing", "db;dur=53"), ("X_Forwarded_Host", "bank.example"),
        ])
        let passed = ForwardedRequest.trailers(trailers, adding: [("Authorization", "token real")])
        #expect(passed?.map(\.name) == ["X-Checksum", "Server-Timing"])
        let untouched = HTTPHeaders([("X-Checksum", "abc")])
        #expect(ForwardedRequest.trailers(untouched, adding: []) == untouched)
        #expect(ForwardedRequest.trailers(nil, adding: []) == nil)
        #expect(ForwardedRequest.trailers(trailers, adding: [])?.contains(name: "Authorization") == true, "a client's own Authorization passes, as in the head")
    }

    @Test func aSessionsCookiesAreConfinedToItsPathAndCannotBeDrovers() {
        let path = "/s/0123456789abcdef0123456789abcdef/"
        #expect(ForwardedResponse.confine("a=1", to: path) == "a=1; Path=\(path)")
        #expect(ForwardedResponse.confine("a=1; Path=/; HttpOnly", to: path) == "a=1; Path=\(path); HttpOnly")
        #expect(ForwardedResponse.confine("a=1; path=\(path)sub; Secure", to: path) == "a=1; Path=\(path)sub; Secure")
        #expect(ForwardedResponse.confine("a=1; Path=\(path)../../; Secure", to: path) == "a=1; Path=\(path); Secure")
        #expect(ForwardedResponse.confine("a=1; Domain=example.com; SameSite=Lax", to: path) == "a=1; Path=\(path); SameSite=Lax")
        #expect(ForwardedResponse.confine("\(SignInCookie.name)=forged; Path=/", to: path) == nil)
        #expect(ForwardedResponse.confine("DROVER-x=1", to: path) == nil)
        #expect(ForwardedResponse.confine("__Host-id=1; Path=/; Secure", to: path) == nil)
        #expect(ForwardedResponse.confine("garbage", to: path) == nil)
        let head = Self.answerHead("HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/\r\nSet-Cookie: drover-auth=x\r\n"
                                   + "Connection: keep-alive, X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n")
        let forwarded = Self.answerHead(String(buffer: head.forwarded(sessionPath: path, connection: nil))).headers
        #expect(forwarded["Set-Cookie"] == ["a=1; Path=\(path)"])
        #expect(!forwarded.contains(name: "X-Internal") && !forwarded.contains(name: "Keep-Alive") && !forwarded.contains(name: "Connection"))
        #expect(forwarded["Content-Length"] == ["0"])
    }
}

extension ProxyConnectionStateMachine.Action {
    var isNone: Bool {
        if case .none = self { true } else { false }
    }
}

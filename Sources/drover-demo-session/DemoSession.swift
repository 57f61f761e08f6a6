import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket
import Synchronization

/// The reference session program: a counter that survives suspend and resume, and a WebSocket
/// echo. Drover starts it with its listening Unix socket as descriptor
/// `DROVER_SESSION_LISTEN_FD` (3; the socket's path is `DROVER_SESSION_SOCKET`, which only
/// droverd can reach), `DROVER_SESSION_ID`, `DROVER_SESSION_STATE_DIR` and
/// `DROVER_SESSION_BASE_PATH` (e.g. `/s/<id>/`).
///
/// `GET <base>count` → `{"count": N}`; `POST <base>count` increments it; `<base>echo` is a
/// WebSocket echo; `GET <base>` is a small HTML page. On SIGUSR1 or SIGTERM it stops as a session
/// program should (docs/PROTOCOL.md, "Sessions"): it stops listening, closes its idle connections
/// (and its WebSockets), answers the requests it is working on, then saves the count to
/// `<state dir>/count` and exits; it restores it when it starts. Every request it acts on is
/// answered: droverd sends one it never read to wherever the session runs next. `DROVER_DEMO_SAVE_SECONDS`
/// makes the save take that long, as a real session's does (tests of a node's stop use it).
@main
struct DemoSession {
    static func main() async throws {
        let env = ProcessInfo.processInfo.environment
        guard let listener = env["DROVER_SESSION_LISTEN_FD"].flatMap(Int32.init) else {
            FileHandle.standardError.write(Data("drover-demo-session: DROVER_SESSION_LISTEN_FD is not set; it is started by droverd\n".utf8))
            exit(2)
        }
        let given = env["DROVER_SESSION_BASE_PATH"] ?? "/"
        let base = given.hasSuffix("/") ? given : given + "/"
        let stateDir = env["DROVER_SESSION_STATE_DIR"] ?? FileManager.default.currentDirectoryPath
        let state = CounterState(file: stateDir + "/count")
        let connections = Connections()
        let server = Mutex<(any Channel)?>(nil)

        for signalNumber in [SIGUSR1, SIGTERM, SIGINT] { signal(signalNumber, SIG_IGN) }
        let sources = [SIGUSR1, SIGTERM, SIGINT].map { signalNumber in
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .main)
            let saving = env["DROVER_DEMO_SAVE_SECONDS"].flatMap(Double.init) ?? 0
            source.setEventHandler {
                // Connections are refused from now on, and closed once they are idle.
                server.withLock { $0 }?.close(promise: nil)
                connections.stop(within: 2)
                if saving > 0 { usleep(UInt32(saving * 1_000_000)) }
                state.save()
                state.waitForAnswers()
                exit(0)
            }
            source.resume()
            return source
        }

        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                let upgrader = NIOWebSocketServerUpgrader(
                    shouldUpgrade: { channel, head in
                        channel.eventLoop.makeSucceededFuture(head.uri.hasPrefix(base + "echo") ? HTTPHeaders() : nil)
                    },
                    upgradePipelineHandler: { channel, _ in
                        channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(EchoHandler()) }
                    })
                connections.add(channel)
                return channel.eventLoop.makeCompletedFuture {
                    let handler = DemoHTTPHandler(base: base, state: state, connections: connections, session: env["DROVER_SESSION_ID"] ?? "?")
                    // After an upgrade the HTTP handler must go: WebSocket frames are not for it.
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withServerUpgrade: (upgraders: [upgrader], completionHandler: { context in
                            context.pipeline.syncOperations.removeHandler(name: "demo", promise: nil)
                        }), withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(handler, name: "demo")
                }
            }
            .withBoundSocket(listener).get()
        server.withLock { $0 = channel }
        FileHandle.standardError.write(Data("drover-demo-session: serving \(base) on \(env["DROVER_SESSION_SOCKET"] ?? "descriptor \(listener)"), count \(state.value)\n".utf8))
        try await channel.closeFuture.get()
        // The listener closes when the session stops; the signal's handler saves and exits.
        while true { try await Task.sleep(for: .seconds(3600)) }
        // A real use of the sources after the wait: `_ = sources` let an optimised build release
        // (and so cancel) them at once, and the release binary then ignored SIGUSR1 and SIGTERM.
        for source in sources { source.cancel() }
    }
}

/// The session's connections, so that it stops without dropping a request it acted on: once
/// ``stop(within:)`` runs, an idle connection (a WebSocket too) is closed at once (a request on
/// its way is never read), and one working on a request after its answer.
final class Connections: Sendable {
    private let state = Mutex<(stopping: Bool, open: [ObjectIdentifier: any Channel], busy: Set<ObjectIdentifier>)>((false, [:], []))

    func add(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        let added = state.withLock { state in
            if !state.stopping { state.open[id] = channel }
            return !state.stopping
        }
        guard added else { return channel.close(promise: nil) }
        channel.closeFuture.whenComplete { _ in
            self.state.withLock { state in
                state.open[id] = nil
                state.busy.remove(id)
            }
        }
    }

    /// A request's head arrived: whether to work on it (not on a connection the stop closed).
    func begin(_ channel: any Channel) -> Bool {
        state.withLock { state in
            let id = ObjectIdentifier(channel)
            guard state.open[id] != nil else { return false }
            state.busy.insert(id)
            return true
        }
    }

    /// A request's answer is written: whether its connection closes now (the session stops).
    func end(_ channel: any Channel) -> Bool {
        state.withLock { state in
            let id = ObjectIdentifier(channel)
            state.busy.remove(id)
            if state.stopping { state.open[id] = nil }
            return state.stopping
        }
    }

    /// Closes the idle connections, and waits (at most `seconds`) until the busy ones are answered.
    func stop(within seconds: Double) {
        let idle = state.withLock { state in
            state.stopping = true
            let idle = state.open.filter { !state.busy.contains($0.key) }
            for id in idle.keys { state.open[id] = nil }
            return Array(idle.values)
        }
        for channel in idle { channel.close(promise: nil) }
        let deadline = Date().addingTimeInterval(seconds)
        while state.withLock({ !$0.busy.isEmpty }), Date() < deadline { usleep(2_000) }
    }
}

/// The counter, restored from and saved to the state directory.
final class CounterState: Sendable {
    let file: String
    /// The count, whether it has been saved for good (the process is about to exit), and how
    /// many increments are counted but not yet answered.
    private let count: Mutex<(value: Int, saved: Bool, unanswered: Int)>

    init(file: String) {
        self.file = file
        let saved = (try? String(contentsOfFile: file, encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        count = Mutex((saved ?? 0, false, 0))
    }

    var value: Int { count.withLock { $0.value } }
    /// The new count, or nil once the count has been saved: an increment answered after the
    /// save would be lost with the process.
    /// Each one counted is ``answered()`` once its answer is written.
    func increment() -> Int? {
        count.withLock { count in
            guard !count.saved else { return nil }
            count.value += 1
            count.unanswered += 1
            return count.value
        }
    }

    /// An increment's answer is written (to the socket: it reaches the client after the exit).
    func answered() {
        count.withLock { $0.unanswered -= 1 }
    }

    /// Waits (at most `seconds`) until every increment counted before the save is answered. The
    /// save runs on another thread than the answers: without this the process could exit
    /// between an increment and its answer, and the client would see its request fail although
    /// the saved count includes it (a drain test saw one count more than its clients were told).
    func waitForAnswers(seconds: Double = 2) {
        let deadline = Date().addingTimeInterval(seconds)
        while count.withLock({ $0.unanswered }) > 0, Date() < deadline { usleep(2_000) }
    }

    /// Writes the count atomically (temporary file, then rename), and takes no increment after.
    func save() {
        let value = count.withLock { count in
            count.saved = true
            return count.value
        }
        let directory = (file as NSString).deletingLastPathComponent
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try? Data("\(value)\n".utf8).write(to: URL(fileURLWithPath: file), options: .atomic)
    }
}

final class DemoHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let base: String
    let state: CounterState
    let connections: Connections
    let session: String
    private var head: HTTPRequestHead?

    init(base: String, state: CounterState, connections: Connections, session: String) {
        self.base = base
        self.state = state
        self.connections = connections
        self.session = session
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            // A connection the stop closed reads nothing more: the request is droverd's to send on.
            guard connections.begin(context.channel) else { return }
            self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
            let (status, type, body): (HTTPResponseStatus, String, String)
            var counted = false
            switch (head.method, path) {
            case (.GET, base + "count"):
                (status, type, body) = (.ok, "application/json", "{\"count\": \(state.value)}")
            case (.POST, base + "count"):
                if let count = state.increment() {
                    counted = true
                    (status, type, body) = (.ok, "application/json", "{\"count\": \(count)}")
                } else {
                    (status, type, body) = (.serviceUnavailable, "text/plain", "saving: the session is being suspended\n")
                }
            case (.GET, base), (.GET, String(base.dropLast())):
                (status, type, body) = (.ok, "text/html; charset=utf-8", page())
            default:
                (status, type, body) = (.notFound, "text/plain", "not found\n")
            }
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: type)
            headers.add(name: "Content-Length", value: String(body.utf8.count))
            if !head.isKeepAlive { headers.add(name: "Connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
            let keepAlive = head.isKeepAlive
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { [channel = context.channel, state, connections, counted] _ in
                if counted { state.answered() }
                // Once the session stops, a connection closes after the answer it was working on.
                if connections.end(channel) || !keepAlive { channel.close(promise: nil) }
            }
        }
    }

    func page() -> String {
        """
        <!doctype html><html><head><meta charset="utf-8"><title>Drover demo session</title></head>
        <body style="font-family: sans-serif; max-width: 40em; margin: 2em auto">
        <h1>Drover demo session</h1>
        <p>Session <code>\(session)</code>, served by process \(getpid()).</p>
        <p>Count: <strong id="count">\(state.value)</strong> <button onclick="bump()">+1</button></p>
        <p>Suspend the session (or stop its node): the count is saved and comes back when it resumes, on whichever node.</p>
        <script>
        function bump() { fetch("count", {method: "POST"}).then(r => r.json()).then(j => document.getElementById("count").textContent = j.count) }
        </script>
        </body></html>
        """
    }
}

/// Echoes every text and binary frame; answers pings; closes when asked.
final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        var payload = frame.unmaskedData
        switch frame.opcode {
        case .text, .binary, .continuation:
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: frame.fin, opcode: frame.opcode, data: payload)), promise: nil)
        case .ping:
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: payload)), promise: nil)
        case .connectionClose:
            let code = payload.readSlice(length: min(2, payload.readableBytes)) ?? ByteBuffer()
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: code))).whenComplete { _ in
                channel.close(promise: nil)
            }
        default:
            break
        }
    }
}

import CShims
import DroverKernel
import DroverSessionProtocol
import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Starts sessions as droverd does: a `drover-session-guard` for each (``SessionGuardHandle``).
struct GuardLauncher: SessionLauncher {
    let ticker: AliveTicker
    let logger: Logger

    func start(_ spec: SessionGuardProtocol.Spec, serving: @escaping @Sendable () -> Bool,
               report: @escaping @Sendable (SessionEvent) -> Void) async throws -> any SessionControl {
        try await SessionGuardHandle.start(spec, ticker: ticker, logger: logger, serving: serving, report: report)
    }

    func answers(_ endpoint: SessionEndpoint, path: String) async -> Bool {
        await SessionProcess.answers(endpoint, path: path)
    }
}

/// droverd's side of one session's guard (``SessionGuardProtocol``): starts
/// `drover-session-guard`, has the ``AliveTicker`` tell it `alive` every second (so a paused
/// droverd falls silent and its sessions end; so does a node cut off from the registry and
/// its peers, which stops saying it), sends it suspend and quit, and passes its reports on as
/// ``SessionEvent``s.
final class SessionGuardHandle: SessionControl {
    let guardPID: pid_t
    private let channel: any Channel

    /// Where `drover-session-guard` is: beside the running executable (droverd), found by
    /// `/proc/self/exe`, not by `argv[0]` (which is only a name when started from `PATH`).
    static var executable: String {
        URL(fileURLWithPath: SessionGuardProtocol.runningExecutable).deletingLastPathComponent().appendingPathComponent("drover-session-guard").path
    }

    /// Starts a guard for `spec`.
    /// - Parameters:
    ///   - serving: asked before each `alive`: false while the node cannot serve the session
    ///     (``NodeRuntime/isCutOff``), so its guard ends it.
    ///   - report: receives the guard's reports that change the session's state, in order;
    ///     `.guardGone` last, once its output closes.
    /// - Parameter logger: says why the pipe to the guard closed when an error closed it (the
    ///   close is reported as `.guardGone` either way).
    static func start(_ spec: SessionGuardProtocol.Spec, ticker: AliveTicker, logger: Logger, serving: @escaping @Sendable () -> Bool,
                      report: @escaping @Sendable (SessionEvent) -> Void) async throws -> SessionGuardHandle {
        var control: [Int32] = [0, 0]
        var events: [Int32] = [0, 0]
        // Close-on-exec: no other child of droverd (a custom balancer's script, say) may hold
        // a guard's pipe open, or the guard would not see droverd go away.
        guard pipe(&control) == 0, pipe(&events) == 0 else {
            throw SessionError.launchFailed("cannot make the pipes for the session's guard (\(String(cString: strerror(errno))))")
        }
        for fd in control + events { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        let path = executable
        // Standard error stays droverd's: what the guard says of itself lands in droverd's log.
        let guardPID: pid_t
        do {
            guardPID = try Spawn.start([path], environment: ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"],
                                       descriptors: [(0, .inherited(control[0])), (1, .inherited(events[1]))])
        } catch {
            for fd in control + events { close(fd) }
            throw SessionError.launchFailed("cannot start \(path) (\(error)); it is built beside droverd")
        }
        close(control[0])
        close(events[1])
        let channel = try await NIOPipeBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(GuardEventReader(guardPath: path) { event in
                        switch event {
                        case .hello: break  // checked by the reader
                        case .lockBusy(let message): report(.lockBusy(message))
                        case .started(let pid, let isolation): report(.started(pid: pid, isolation: isolation))
                        case .ended(let reason, let status, let detail): report(.ended(reason, status: status, detail: detail))
                        case .refreshed: report(.lockRefreshed)
                        case .refreshFailed(let message): report(.lockRefreshFailed(message))
                        case .locked(let brokeStale): report(.locked(brokeStale: brokeStale))
                        }
                    } refused: { refusal in
                        // Not a guard of this build: nothing else it says is read, and it goes.
                        Foundation.kill(guardPID, SIGKILL)
                        report(.ended(.failed, status: -1, detail: refusal))
                    } failed: { error in
                        logger.warning("the pipe to a session's guard failed; the guard is taken for gone",
                                       metadata: ["session": "\(spec.sessionID)", "guard-pid": "\(guardPID)", "error": "\(error)"])
                    } closed: {
                        report(.guardGone)
                        // The guard is exiting: reap it off the event loop.
                        Thread {
                            var status: Int32 = 0
                            while waitpid(guardPID, &status, 0) < 0, errno == EINTR {}
                        }.start()
                    })
                }
            }
            .takingOwnershipOfDescriptors(input: events[0], output: control[1]).get()
        let handle = SessionGuardHandle(guardPID: guardPID, channel: channel)
        // The spec first, whole, before any tick can reach the pipe; the ticker is given the pipe
        // the moment the spec is written, on the channel's loop. Not after an `await`: the guard
        // counts droverd's silence from the spec on, and in a burst of starts a task waits
        // seconds for a thread of the cooperative pool (a proof run saw guards end their
        // sessions "droverd-silent" before the ticker knew of them). Duplicated on that loop,
        // where the descriptor cannot close meanwhile: a closed channel's descriptor number may
        // already belong to something else.
        let output = control[1]
        let registered = channel.writeAndFlush(ByteBuffer(string: spec.line)).map {
            guard channel.isActive else { return }
            let duplicate = fcntl(output, F_DUPFD_CLOEXEC, 0)
            guard duplicate >= 0 else { return }
            let id = ticker.add(descriptor: duplicate, serving: serving)
            channel.closeFuture.whenComplete { _ in ticker.remove(id) }
        }
        try? await registered.get()
        return handle
    }

    private init(guardPID: pid_t, channel: any Channel) {
        self.guardPID = guardPID
        self.channel = channel
    }

    func stop(_ stop: SessionStop) {
        send((stop == .suspend ? SessionGuardProtocol.Command.suspend : .quit).line)
    }

    private func send(_ line: String) {
        channel.writeAndFlush(ByteBuffer(string: line), promise: nil)
    }

    /// Kills the guard at once (its session's processes die with it by their parent-death
    /// signal): for a launch that is given up.
    func kill() {
        Foundation.kill(guardPID, SIGKILL)
    }
}

/// Splits the guard's output into lines and reads each as an event, once the first line (the
/// handshake, ``SessionGuardProtocol/Event/hello(_:)``) named a build of this one's protocol;
/// else the guard is refused and nothing more of it is read.
private final class GuardEventReader: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private var pending = ByteBuffer()
    private let guardPath: String
    private var greeted = false
    private var refused = false
    private let onEvent: @Sendable (SessionGuardProtocol.Event) -> Void
    private let onRefusal: @Sendable (String) -> Void
    private let onError: @Sendable (any Error) -> Void
    private let onClose: @Sendable () -> Void
    /// The close is reported once (the input closes, then the channel goes inactive).
    private var closeReported = false

    init(guardPath: String, _ onEvent: @escaping @Sendable (SessionGuardProtocol.Event) -> Void,
         refused onRefusal: @escaping @Sendable (String) -> Void, failed onError: @escaping @Sendable (any Error) -> Void,
         closed onClose: @escaping @Sendable () -> Void) {
        self.guardPath = guardPath
        self.onEvent = onEvent
        self.onRefusal = onRefusal
        self.onError = onError
        self.onClose = onClose
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        pending.writeBuffer(&buffer)
        while let newline = pending.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
            let length = newline - pending.readerIndex
            let line = pending.readString(length: length) ?? ""
            pending.moveReaderIndex(forwardBy: 1)
            guard !refused else { continue }
            let event = SessionGuardProtocol.Event(line: Substring(line))
            if !greeted {
                let refusal: String? = if case .hello(let build) = event {
                    SessionGuardProtocol.handshakeRefusal(guard: build, droverd: .current, guardPath: guardPath)
                } else {
                    SessionGuardProtocol.silentGuardRefusal(guardPath: guardPath, firstLine: line)
                }
                if let refusal {
                    refused = true
                    onRefusal(refusal)
                    continue
                }
                greeted = true
            }
            if let event { onEvent(event) }
        }
        pending.discardReadBytes()
    }

    func channelInactive(context: ChannelHandlerContext) {
        reportClose()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            reportClose()
            context.close(promise: nil)
        }
    }

    private func reportClose() {
        guard !closeReported else { return }
        closeReported = true
        onClose()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        onError(error)
        context.close(promise: nil)
    }
}

import CShims
import DroverKernel
import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// droverd's side of one session's guard (``SessionGuardProtocol``): starts
/// `drover-session-guard`, tells it `alive` every second from the event loop (so a paused
/// droverd falls silent and its sessions end), sends it suspend and quit, and follows its
/// events.
final class SessionGuardHandle: Sendable {
    /// What the guard has said so far.
    struct State: Sendable {
        var locked = false
        var lockBusy: String?
        var started: (pid: Int32, isolation: String)?
        var ended: (reason: SessionGuardProtocol.EndReason, status: Int32, detail: String)?
        /// The guard's output closed: it exited (or was killed).
        var closed = false
    }

    let guardPID: pid_t
    private let channel: any Channel
    private let state = Mutex(State())
    private let waiters = Mutex<[UUID: (predicate: @Sendable (State) -> Bool, continuation: CheckedContinuation<State, Never>)]>([:])

    /// Where `drover-session-guard` is: beside the running executable (droverd), found by
    /// `/proc/self/exe`, not by `argv[0]` (which is only a name when started from `PATH`).
    static var executable: String {
        let own = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: own).deletingLastPathComponent().appendingPathComponent("drover-session-guard").path
    }

    /// Starts a guard for `spec`.
    static func start(_ spec: SessionGuardProtocol.Spec) async throws -> SessionGuardHandle {
        var control: [Int32] = [0, 0]
        var events: [Int32] = [0, 0]
        // Close-on-exec: no other child of droverd (a custom balancer's script, say) may hold
        // a guard's pipe open, or the guard would not see droverd go away.
        guard pipe(&control) == 0, pipe(&events) == 0 else {
            throw SessionError.launchFailed("cannot make the pipes for the session's guard (\(String(cString: strerror(errno))))")
        }
        for fd in control + events { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, control[0], 0)
        posix_spawn_file_actions_adddup2(&actions, events[1], 1)
        drover_spawn_close_from(&actions, 3)
        let path = executable
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup(path), nil]
        let envp: [UnsafeMutablePointer<CChar>?] = (["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"] as [String]).map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, path, &actions, nil, argv, envp)
        close(control[0])
        close(events[1])
        guard status == 0 else {
            close(control[1])
            close(events[0])
            throw SessionError.launchFailed("cannot start \(path) (\(String(cString: strerror(status)))); it is built beside droverd")
        }
        let box = HandleBox()
        let channel = try await NIOPipeBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(GuardEventReader { event in
                        box.handle.withLock { $0 }?.receive(event)
                    } closed: {
                        box.handle.withLock { $0 }?.receiveClose()
                    })
                }
            }
            .takingOwnershipOfDescriptors(input: events[0], output: control[1]).get()
        let handle = SessionGuardHandle(guardPID: pid, channel: channel)
        box.handle.withLock { $0 = handle }
        handle.send(spec.line)
        channel.eventLoop.scheduleRepeatedTask(initialDelay: TimeAmount.seconds(1), delay: TimeAmount.seconds(1)) { task in
            guard channel.isActive else { return task.cancel() }
            channel.writeAndFlush(ByteBuffer(string: SessionGuardProtocol.Command.alive.line), promise: nil)
        }
        return handle
    }

    private init(guardPID: pid_t, channel: any Channel) {
        self.guardPID = guardPID
        self.channel = channel
    }

    var current: State { state.withLock { $0 } }

    func send(_ command: SessionGuardProtocol.Command) { send(command.line) }

    private func send(_ line: String) {
        channel.writeAndFlush(ByteBuffer(string: line), promise: nil)
    }

    /// Waits until `predicate` holds (or the guard is gone, whatever the predicate says).
    func wait(until predicate: @escaping @Sendable (State) -> Bool) async -> State {
        let id = UUID()
        return await withCheckedContinuation { continuation in
            let now = state.withLock { $0 }
            if predicate(now) || now.closed {
                continuation.resume(returning: now)
                return
            }
            waiters.withLock { $0[id] = (predicate, continuation) }
            // The state may have changed between the check and the registration.
            let again = state.withLock { $0 }
            if predicate(again) || again.closed, let waiter = waiters.withLock({ $0.removeValue(forKey: id) }) {
                waiter.continuation.resume(returning: again)
            }
        }
    }

    /// Kills the guard at once (its session's processes die with it by their parent-death
    /// signal): for a launch that is given up.
    func kill() {
        Foundation.kill(guardPID, SIGKILL)
    }

    private func receive(_ event: SessionGuardProtocol.Event) {
        update { state in
            switch event {
            case .locked: state.locked = true
            case .lockBusy(let message): state.lockBusy = message
            case .started(let pid, let isolation): state.started = (pid, isolation)
            case .refreshed, .refreshFailed: break
            case .ended(let reason, let status, let detail): state.ended = (reason, status, detail)
            }
        }
    }

    private func receiveClose() {
        guard !state.withLock({ $0.closed }) else { return }
        update { $0.closed = true }
        let pid = guardPID
        // The guard is exiting: reap it off the event loop.
        Thread {
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        }.start()
    }

    private func update(_ change: (inout State) -> Void) {
        let now = state.withLock { state -> State in
            change(&state)
            return state
        }
        let ready = waiters.withLock { waiters -> [CheckedContinuation<State, Never>] in
            let ids = waiters.filter { $0.value.predicate(now) || now.closed }.map(\.key)
            return ids.compactMap { waiters.removeValue(forKey: $0)?.continuation }
        }
        for continuation in ready { continuation.resume(returning: now) }
    }
}

/// Lets the channel's handler reach the handle made after the channel.
private final class HandleBox: Sendable {
    let handle = Mutex<SessionGuardHandle?>(nil)
}

/// Splits the guard's output into lines and reads each as an event.
private final class GuardEventReader: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private var pending = ByteBuffer()
    private let onEvent: @Sendable (SessionGuardProtocol.Event) -> Void
    private let onClose: @Sendable () -> Void

    init(_ onEvent: @escaping @Sendable (SessionGuardProtocol.Event) -> Void, closed onClose: @escaping @Sendable () -> Void) {
        self.onEvent = onEvent
        self.onClose = onClose
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        pending.writeBuffer(&buffer)
        while let newline = pending.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
            let length = newline - pending.readerIndex
            let line = pending.readString(length: length) ?? ""
            pending.moveReaderIndex(forwardBy: 1)
            if let event = SessionGuardProtocol.Event(line: Substring(line)) { onEvent(event) }
        }
        pending.discardReadBytes()
    }

    func channelInactive(context: ChannelHandlerContext) {
        onClose()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            onClose()
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

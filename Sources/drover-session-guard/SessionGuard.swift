import CShims
import DroverKernel
import DroverSessionProtocol
import DroverLockPlugins
import DroverVersion
import Foundation
import Logging
import Synchronization

/// `drover-session-guard`: holds one session's lease and ends every process of the session
/// before that lease can be judged stale anywhere (``SessionGuardProtocol``).
///
/// Threads: the main one waits for the session's main process; one refreshes the lock every
/// `refresh-rate` or a third of the lease bound, whichever is sooner; one reads droverd's commands; and a watchdog that touches no file system
/// (it reads the monotonic clock and sends signals) ends the session when the last good
/// refresh is older than the lease bound, or droverd has said nothing for too long, even when a
/// refresh hangs in a system call on a dead NFS mount.
@main
enum SessionGuardMain {
    static func main() {
        // What an operator asks of the guard beside droverd (the two must come from one build).
        if CommandLine.arguments.dropFirst().first == "--version" {
            print(DroverVersion.versionLine)
            exit(0)
        }
        // The handshake: this build first, before anything of droverd's is read; then droverd's
        // build, from the spec, checked before anything else of the spec is used.
        let events = EventWriter()
        events.send(.hello(.current))
        func refuse(_ message: String) -> Never {
            FileHandle.standardError.write(Data("drover-session-guard: \(message)\n".utf8))
            events.send(.ended(.failed, status: 2, detail: message))
            exit(2)
        }
        guard let line = SessionGuard.readFirstLine() else {
            refuse("expected the session's spec as the first line of standard input; droverd starts this program")
        }
        let spec: SessionGuardProtocol.Spec
        do {
            spec = try SessionGuardProtocol.Spec(line: line)
        } catch {
            refuse("cannot read droverd's spec (\(error)); droverd and drover-session-guard must come from the same build")
        }
        if let refusal = SessionGuardProtocol.handshakeRefusal(guard: .current, droverd: spec.build, guardPath: SessionGuardProtocol.runningExecutable) {
            refuse(refusal)
        }
        let guardian = SessionGuard(spec: spec, events: events)
        guardian.run()
    }
}

final class SessionGuard: Sendable {
    let spec: SessionGuardProtocol.Spec
    let events: EventWriter
    /// Monotonic nanoseconds of the last good refresh and of droverd's last word.
    let lastRefresh = Atomic<UInt64>(monotonicNanoseconds())
    let lastAlive = Atomic<UInt64>(monotonicNanoseconds())
    let ending = Atomic<Bool>(false)
    let stopping = Atomic<Bool>(false)
    /// The main process's wait status once it ended (-1 until then).
    let mainStatus = Atomic<Int32>(-1)
    let held = Mutex<(any HeldLock)?>(nil)
    let process = Mutex<SessionProcessGroup?>(nil)

    init(spec: SessionGuardProtocol.Spec, events: EventWriter) {
        self.spec = spec
        self.events = events
    }

    func log(_ message: String) {
        FileHandle.standardError.write(Data("drover-session-guard[\(spec.sessionID.prefix(8))]: \(message)\n".utf8))
    }

    func run() {
        signal(SIGPIPE, SIG_IGN)
        // droverd's word counts from the start, while the lock is awaited too.
        Thread { self.readCommands() }.start()
        let locks: any LockProvider
        guard let fileLocks = spec.locks?.configuration else {
            fail("the spec names no lock settings; droverd and drover-session-guard must come from the same build")
        }
        do {
            var logger = Logger(label: "drover-session-guard")
            logger.logLevel = .warning
            let context = PluginContext(configDirectory: spec.configDirectory, dataDirectory: "", secureCookieKey: nil, logger: logger)
            locks = try PluginCatalog(lockProviders: PluginCatalog.builtinLockProviders).makeLockProvider(fileLocks, context: context)
        } catch {
            fail("cannot build the lock provider: \(error)")
        }
        guard let lock = acquire(locks) else {
            events.send(.lockBusy("its lock \(spec.lockPath) stayed held for \(Int(spec.lockWait)) s; the session may still run on another node"))
            exit(3)
        }
        held.withLock { $0 = lock }
        lastRefresh.store(monotonicNanoseconds(), ordering: .sequentiallyConsistent)
        events.send(.locked(brokeStale: lock.brokeStale))
        // The lease runs from the moment the lock is ours: refreshes (and the watchdog) start
        // now, not once the command is up.
        let leaseBound = SessionGuardProtocol.leaseBound(timeoutInterval: fileLocks.timeoutInterval)
        if spec.testMode != .unguarded {
            let interval = SessionGuardProtocol.refreshInterval(refreshRate: locks.refreshInterval, timeoutInterval: fileLocks.timeoutInterval)
            Thread { self.refreshLoop(lock, every: interval) }.start()
        }
        Thread { self.watchdog(leaseBound: leaseBound) }.start()

        // Started under the same lock `end` reads the group with, and only while the session is
        // not ending: an end that comes during the start (droverd killed meanwhile) then sees
        // the new process and kills it, instead of exiting before the process could learn of
        // its parent's death (setpriv sets the parent-death signal only later).
        let group: SessionProcessGroup?
        do {
            group = try process.withLock { current in
                guard !ending.load(ordering: .sequentiallyConsistent) else { return nil }
                current = try SessionProcessGroup.start(spec: spec)
                return current
            }
        } catch {
            try? lock.release()
            fail("\(error)")
        }
        guard let group else {
            // Ending already: `end` exits the guard.
            while true { pause() }
        }
        events.send(.started(pid: group.pid, isolation: group.isolation))
        if spec.limits?.memoryBytes != nil { Thread { self.watchMemory(group) }.start() }

        let status = group.waitForMain()
        mainStatus.store(status, ordering: .sequentiallyConsistent)
        if !stopping.load(ordering: .sequentiallyConsistent) {
            end(.exited, status: status, detail: "the session's main process ended on its own", release: true)
        }
        // A suspend or quit under way finishes the session; wait for it.
        while true { pause() }
    }

    /// Takes the lock, waiting up to `lockWait` for a holder elsewhere to release it or let it
    /// go stale.
    func acquire(_ locks: any LockProvider) -> (any HeldLock)? {
        let directory = (spec.lockPath as NSString).deletingLastPathComponent
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let deadline = Date().addingTimeInterval(spec.lockWait)
        while true {
            do {
                if let lock = try locks.tryAcquire(spec.lockPath) { return lock }
            } catch {
                fail("cannot take the session's lock: \(error)")
            }
            if Date() >= deadline { return nil }
            usleep(250_000)
        }
    }

    /// Refreshes `seconds` after the last good refresh (not after the last attempt, so a slow
    /// start or a slow refresh does not push the next one back), retrying a failed one soon.
    func refreshLoop(_ lock: any HeldLock, every seconds: Double) {
        let interval = UInt64(seconds * 1e9)
        while !ending.load(ordering: .sequentiallyConsistent) {
            let due = lastRefresh.load(ordering: .sequentiallyConsistent) &+ interval
            let now = monotonicNanoseconds()
            if now < due { sleepNanoseconds(min(due - now, 1_000_000_000)); continue }
            if ending.load(ordering: .sequentiallyConsistent) { return }
            if spec.testMode == .hangRefresh {
                log("test mode: this refresh hangs for ever")
                while true { pause() }
            }
            do {
                if try lock.refresh() {
                    lastRefresh.store(monotonicNanoseconds(), ordering: .sequentiallyConsistent)
                    events.send(.refreshed)
                } else {
                    end(.leaseLost, status: -1, detail: "the lock was taken over by another node", release: false)
                }
            } catch {
                events.send(.refreshFailed("\(error)"))
                log("cannot refresh the lock: \(error)")
                sleepNanoseconds(250_000_000)
            }
        }
    }

    /// Touches no file system: a refresh stuck in a system call cannot delay it.
    func watchdog(leaseBound: Double) {
        let leaseNanos = UInt64(leaseBound * 1e9)
        let silenceNanos = UInt64(spec.droverdSilence * 1e9)
        while !ending.load(ordering: .sequentiallyConsistent) {
            usleep(50_000)
            guard spec.testMode != .unguarded else { continue }
            let verdict = SessionGuardProtocol.watchdogVerdict(
                now: monotonicNanoseconds(), lastRefresh: lastRefresh.load(ordering: .sequentiallyConsistent),
                lastWord: lastAlive.load(ordering: .sequentiallyConsistent), leaseBound: leaseNanos, silenceBound: silenceNanos)
            switch verdict {
            case .leaseLost:
                end(.leaseLost, status: -1, detail: "no refresh of the lock succeeded for \(leaseBound) s (timeout-interval less its margin)", release: false)
            // Bytes waiting in the pipe mean droverd did speak: this guard itself was not
            // scheduled (a machine stalled by a burst of starts wakes this thread before the
            // reader), and the reader will take them in a moment.
            case .droverdSilent where !Self.inputWaiting():
                end(.droverdSilent, status: -1, detail: "droverd said nothing for \(spec.droverdSilence) s", release: true)
            default:
                break
            }
        }
    }

    /// Ends the whole session once the kernel's OOM killer ended a process of it: on cgroup v1
    /// the killer takes one process (a Jupyter kernel, say) and leaves a session that has lost
    /// its work; on v2 `memory.oom.group` already took them all. Reads one small file of the
    /// session's memory cgroup five times a second.
    func watchMemory(_ group: SessionProcessGroup) {
        while !ending.load(ordering: .sequentiallyConsistent) {
            if group.wentOverMemoryLimit {
                end(.memoryLimit, status: -1, detail: memoryLimitDetail, release: true)
                return
            }
            usleep(200_000)
        }
    }

    var memoryLimitDetail: String {
        "it used more than its memory-limit of \(spec.limits?.memoryBytes.map(SessionLimits.formatBytes) ?? "?") and the kernel ended it"
    }

    /// Reads droverd's commands. Any bytes from droverd are a sign of life, counted when they
    /// arrive (before the lines are taken apart).
    func readCommands() {
        var pending: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            lastAlive.store(monotonicNanoseconds(), ordering: .sequentiallyConsistent)
            pending += chunk[0..<count]
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                switch SessionGuardProtocol.Command(rawValue: line) {
                case .alive:
                    break
                case .suspend:
                    stop(SIGUSR1, as: .suspended)
                case .quit:
                    stop(SIGTERM, as: .quit)
                case nil:
                    log("unknown command '\(line)' ignored")
                }
            }
        }
        // droverd is gone (its end of the pipe closed): nobody can serve this session.
        end(.droverdSilent, status: -1, detail: "droverd went away", release: true)
    }

    /// The first line of standard input, read a byte at a time so that nothing after it is
    /// taken into a buffer the command reader would not see.
    static func readFirstLine() -> String? {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while true {
            let count = read(0, &byte, 1)
            if count < 0, errno == EINTR { continue }
            guard count == 1 else { return nil }
            if byte == UInt8(ascii: "\n") { return String(decoding: line, as: UTF8.self) }
            line.append(byte)
        }
    }

    /// Whether droverd's pipe has bytes (or its end) waiting to be read.
    static func inputWaiting() -> Bool {
        var input = pollfd(fd: 0, events: Int16(POLLIN), revents: 0)
        return poll(&input, 1, 0) > 0 && input.revents != 0
    }

    /// Asks the main process to save and exit; after `stopGrace` every process is ended.
    func stop(_ signalNumber: Int32, as reason: SessionGuardProtocol.EndReason) {
        guard !stopping.exchange(true, ordering: .sequentiallyConsistent) else { return }
        Thread {
            // Asked before the command started (a start given up): wait for it, briefly.
            var waited = 0
            while self.process.withLock({ $0 }) == nil, waited < 250 {
                usleep(20_000)
                waited += 1
            }
            guard let group = self.process.withLock({ $0 }) else {
                self.end(reason, status: -1, detail: "", release: true)
                return
            }
            kill(group.pid, signalNumber)
            let deadline = monotonicNanoseconds() + UInt64(self.spec.stopGrace * 1e9)
            while self.mainStatus.load(ordering: .sequentiallyConsistent) == -1, monotonicNanoseconds() < deadline {
                usleep(20_000)
            }
            let status = self.mainStatus.load(ordering: .sequentiallyConsistent)
            self.end(reason, status: status, detail: status == -1 ? "the main process did not exit within \(self.spec.stopGrace) s and was killed" : "", release: true)
        }.start()
    }

    /// Ends every process of the session (once), gives the lock up when it is still ours, says
    /// so, and exits.
    func end(_ reason: SessionGuardProtocol.EndReason, status: Int32, detail: String, release: Bool) {
        guard !ending.exchange(true, ordering: .sequentiallyConsistent) else { return }
        let group = process.withLock { $0 }
        var (reason, detail) = (reason, detail)
        // Its main process ended because the OOM killer took it (or took the group, on v2).
        if reason == .exited, spec.limits?.memoryBytes != nil, group?.wentOverMemoryLimit == true { (reason, detail) = (.memoryLimit, memoryLimitDetail) }
        group?.killAll()
        group?.waitUntilEmpty(seconds: 5)
        if release, let lock = held.withLock({ $0 }) {
            // Bounded: on a dead mount the release may hang; the lock then goes stale.
            let released = Atomic<Bool>(false)
            Thread {
                try? lock.release()
                released.store(true, ordering: .sequentiallyConsistent)
            }.start()
            let deadline = monotonicNanoseconds() + 2_000_000_000
            while !released.load(ordering: .sequentiallyConsistent), monotonicNanoseconds() < deadline { usleep(10_000) }
        }
        if let run = spec.runDirectory { RunDirectory.remove(run, uid: spec.uid) }
        // Only now may the main process's pid go back to the system: nothing signals it again.
        group?.reapMain()
        // After the reap: the main process, a zombie until then, still counted in its cgroup.
        if let left = group?.removeCgroup(), !left.isEmpty { log("could not remove the session's cgroup folders \(left.joined(separator: ", ")): still busy") }
        unlink(spec.socketPath)
        if reason == .leaseLost || reason == .droverdSilent { log("ended the session: \(reason.rawValue): \(detail)") }
        events.send(.ended(reason, status: status, detail: detail))
        exit(0)
    }

    func fail(_ message: String) -> Never {
        log(message)
        events.send(.ended(.failed, status: -1, detail: message))
        exit(1)
    }
}

/// Writes events to standard output, one whole line at a time.
final class EventWriter: Sendable {
    private let lock = Mutex(())

    func send(_ event: SessionGuardProtocol.Event) {
        let bytes = Array(event.line.utf8)
        lock.withLock { _ in
            var sent = 0
            while sent < bytes.count {
                let n = bytes.withUnsafeBytes { write(1, $0.baseAddress! + sent, $0.count - sent) }
                if n <= 0 { return }
                sent += n
            }
        }
    }
}

func sleepNanoseconds(_ nanoseconds: UInt64) {
    var request = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0, errno == EINTR { request = remaining }
}

func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

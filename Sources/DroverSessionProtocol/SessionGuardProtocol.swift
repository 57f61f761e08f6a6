public import DroverKernel
import DroverVersion
import Foundation

/// What droverd and a session's guard (`drover-session-guard`) say to each other: the guard's
/// whole contract, in one place.
///
/// The guard is a small process between droverd and the session command. It runs with
/// droverd's rights (never as the user, who could stop or kill it), takes the session's
/// cross-node lock and keeps it fresh, starts the command as the user in a cgroup of its own,
/// and ends every process of the session when it can no longer refresh the lock in time, when
/// droverd goes quiet, and on suspend or quit. droverd writes the spec as the first line of
/// the guard's standard input, then commands; the guard answers with events on its standard
/// output, one per line, the first of them always ``Event/hello(_:)`` (the handshake).
public enum SessionGuardProtocol {
    /// Which build a side is: the spec carries droverd's, the guard's first event its own. The
    /// two must speak the same cluster protocol (which covers this pipe protocol); a guard
    /// binary replaced on disk under a running droverd is found out by this handshake, before
    /// either side reads anything else of the other.
    public struct Build: Codable, Sendable, Equatable {
        public var release: String
        public var protocolVersion: Int

        public init(release: String, protocolVersion: Int) {
            self.release = release
            self.protocolVersion = protocolVersion
        }

        /// This build's.
        public static var current: Build { Build(release: DroverVersion.release, protocolVersion: DroverVersion.clusterProtocol) }

        public var description: String { DroverVersion.describe(release: release, protocol: protocolVersion) }
    }

    /// The running program's own file, by `/proc/self/exe` (argv[0] is only a name when started
    /// from `PATH`): droverd finds its guard beside it, and the guard names itself by it.
    public static var runningExecutable: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    /// Why a guard of build `guardBuild` and a droverd of build `droverd` (nil: a droverd from
    /// before the handshake, whose spec names no build) must not run a session together, in one
    /// line with the fix; nil when they may.
    public static func handshakeRefusal(guard guardBuild: Build, droverd: Build?, guardPath: String) -> String? {
        let fix = "the programs were replaced under a running droverd: restart droverd (systemctl restart droverd)"
        guard let droverd else {
            return "\(guardPath) is \(guardBuild.description) but droverd names no build (it is older than the guard's handshake); \(fix)"
        }
        guard droverd.protocolVersion != guardBuild.protocolVersion else { return nil }
        return "\(guardPath) is \(guardBuild.description) but droverd is \(droverd.description); \(fix)"
    }

    /// What droverd makes of a guard whose first line was not a ``Event/hello(_:)`` (a guard
    /// from before the handshake): refused, whatever it said.
    public static func silentGuardRefusal(guardPath: String, firstLine: String) -> String {
        "\(guardPath) did not begin with its build (it began '\(Event.oneLine(String(firstLine.prefix(80))))'), so it is older than "
            + "this droverd, \(Build.current.description); the programs were replaced under a running droverd: restart droverd (systemctl restart droverd)"
    }

    /// How a guard is to run its session.
    public struct Spec: Codable, Sendable, Equatable {
        public var sessionID: String
        /// The configuration directory: the guard builds its lock provider from `file-locks`.
        public var configDirectory: String
        /// The session's lock file on shared storage.
        public var lockPath: String
        /// Seconds to wait for a lock held elsewhere (a dead holder's goes stale meanwhile).
        public var lockWait: Double
        /// The shell command to run (`session-command`).
        public var command: String
        public var userName: String
        public var uid: UInt32
        public var gid: UInt32
        public var home: String
        /// Where the guard binds the session's Unix socket (in a folder only droverd's user can
        /// enter); the session gets it listening as descriptor 3.
        public var socketPath: String
        /// The session's environment; `DROVER_SESSION_STATE_DIR` is where the user's own shell
        /// makes the state folder and appends the command's output to `session.log`.
        public var environment: [String: String]
        /// Seconds the main process gets to save its state on suspend or quit.
        public var stopGrace: Double
        /// Seconds without a word from droverd after which the session is ended.
        public var droverdSilence: Double
        /// Test-only behaviour, from droverd's `DROVER_TEST_SESSION_GUARD`; nil in production.
        public var testMode: TestMode?
        /// droverd's build, which the guard checks against its own before anything else (nil
        /// from a droverd older than the handshake, which the guard refuses).
        public var build: Build?
        /// A session kind's argument vector (placeholders filled in), run as the user in a login
        /// shell; nil for `session-command`, whose shell line is ``command``.
        public var arguments: [String]?
        /// How droverd reaches the program (nil: `inherited`).
        public var endpoint: SessionKind.Endpoint?
        /// The user's login shell (`SHELL`), which runs ``arguments`` as a login would.
        public var loginShell: String?
        /// The session's own folder, for `unix-socket` (the program binds its socket there) and
        /// for a secret: the guard makes it, in a tree only root may write, owned by the user with
        /// mode 0700, and removes it through directory descriptors at the end.
        public var runDirectory: String?
        /// The session's secret, written to `secret` in ``runDirectory`` (mode 0600, the user's)
        /// for a program that checks one. Never in an argument or the environment.
        public var secret: String?
        /// The memory and CPU the session may take, set on its cgroups before the command runs;
        /// a start whose limits cannot be set fails.
        public var limits: SessionLimits?
        /// `file-locks` as droverd read it at start: the guard takes its lock provider and every
        /// timing (refresh, lease bound) from here, never from the file, which may have been
        /// edited since.
        public var locks: LockSettings?

        public init(sessionID: String, configDirectory: String, lockPath: String, lockWait: Double, command: String,
                    userName: String, uid: UInt32, gid: UInt32, home: String, socketPath: String, environment: [String: String],
                    stopGrace: Double, droverdSilence: Double, testMode: TestMode? = nil) {
            self.sessionID = sessionID
            self.configDirectory = configDirectory
            self.lockPath = lockPath
            self.lockWait = lockWait
            self.command = command
            self.userName = userName
            self.uid = uid
            self.gid = gid
            self.home = home
            self.socketPath = socketPath
            self.environment = environment
            self.stopGrace = stopGrace
            self.droverdSilence = droverdSilence
            self.testMode = testMode
            build = .current
        }

        /// The endpoint in force.
        public var endpointType: SessionKind.Endpoint { endpoint ?? .inherited }
        /// The file in ``runDirectory`` that holds the secret.
        public static let secretFileName = "secret"
        /// The socket a `unix-socket` program binds in ``runDirectory``.
        public static let socketFileName = "http.sock"

        /// One line of JSON.
        public var line: String {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self) + "\n"
        }

        public init(line: String) throws {
            self = try JSONDecoder().decode(Spec.self, from: Data(line.utf8))
        }
    }

    /// The `file-locks` settings a guard works with.
    public struct LockSettings: Codable, Sendable, Equatable {
        public var lockType: String
        public var refreshRate: Int
        public var timeoutInterval: Int
        public var enableLogging: Bool
        public var logFile: String?

        public init(_ config: FileLocksConfiguration) {
            lockType = config.lockType
            refreshRate = config.refreshRate
            timeoutInterval = config.timeoutInterval
            enableLogging = config.enableLogging
            logFile = config.logFile
        }

        /// As the lock providers take it.
        public var configuration: FileLocksConfiguration {
            var config = FileLocksConfiguration()
            config.lockType = lockType
            config.refreshRate = refreshRate
            config.timeoutInterval = timeoutInterval
            config.enableLogging = enableLogging
            config.logFile = logFile
            return config
        }
    }

    /// What the tests make a guard do wrong on purpose, to show their checks can fail and the
    /// watchdog holds.
    public enum TestMode: String, Codable, Sendable {
        /// No refresh, no watchdog, droverd's silence ignored: the runtime before guards.
        case unguarded
        /// The first refresh hangs for ever, as one stuck on a dead NFS mount would.
        case hangRefresh = "hang-refresh"
    }

    /// droverd to guard.
    public enum Command: String, Sendable {
        /// droverd is alive and serving; sent every second.
        case alive
        /// SIGUSR1 to the main process, its grace to save and exit, then the rest is ended.
        case suspend
        /// SIGTERM to the main process, its grace, then the rest is ended.
        case quit

        public var line: String { rawValue + "\n" }
    }

    /// Why a session ended.
    public enum EndReason: String, Sendable {
        /// Its main process exited on its own.
        case exited
        case suspended
        case quit
        /// The lock could not be refreshed in time, or was taken over: the session was ended
        /// before any other node could judge the lock stale.
        case leaseLost = "lease-lost"
        /// droverd said nothing for `droverdSilence` seconds (paused, or gone).
        case droverdSilent = "droverd-silent"
        /// The command could not be started.
        case failed
        /// It took more memory than its kind's `memory-limit`: the kernel's OOM killer ended a
        /// process of it, and the guard ended the rest.
        case memoryLimit = "memory-limit"
    }

    /// Guard to droverd.
    public enum Event: Sendable, Equatable {
        /// The guard's build: always its first line, before it reads the spec's build.
        case hello(Build)
        /// The lock is ours (taken over from a dead holder when `brokeStale`); the command
        /// starts next.
        case locked(brokeStale: Bool)
        /// The lock stayed held elsewhere for `lockWait` seconds; nothing was started.
        case lockBusy(String)
        /// The command runs as `pid`, held together as `isolation` says: its cgroups
        /// (``SessionCgroupSet/words``), or `process-group` when it has none.
        case started(pid: Int32, isolation: String)
        /// A refresh of the lock succeeded.
        case refreshed
        /// A refresh failed; the session ends if none succeeds before the lease bound.
        case refreshFailed(String)
        /// Every process of the session is gone; the guard exits next.
        case ended(EndReason, status: Int32, detail: String)

        public var line: String {
            switch self {
            case .hello(let build): "hello \(build.protocolVersion) \(Self.oneLine(build.release))\n"
            case .locked(let brokeStale): brokeStale ? "locked broke-stale\n" : "locked\n"
            case .lockBusy(let message): "lock-busy \(Self.oneLine(message))\n"
            case .started(let pid, let isolation): "started \(pid) \(isolation)\n"
            case .refreshed: "refreshed\n"
            case .refreshFailed(let message): "refresh-failed \(Self.oneLine(message))\n"
            case .ended(let reason, let status, let detail): "ended \(reason.rawValue) \(status) \(Self.oneLine(detail))\n"
            }
        }

        /// Reads one line (without its newline); nil for a line that is not an event.
        public init?(line: Substring) {
            let parts = line.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
            let rest = parts.count > 1 ? String(parts[1]) : ""
            switch parts.first {
            case "hello":
                let fields = rest.split(separator: " ", maxSplits: 1)
                guard fields.count == 2, let version = Int(fields[0]) else { return nil }
                self = .hello(Build(release: String(fields[1]), protocolVersion: version))
            case "locked": self = .locked(brokeStale: rest == "broke-stale")
            case "lock-busy": self = .lockBusy(rest)
            case "refreshed": self = .refreshed
            case "refresh-failed": self = .refreshFailed(rest)
            case "started":
                let fields = rest.split(separator: " ", maxSplits: 1)
                guard let pid = fields.first.flatMap({ Int32($0) }) else { return nil }
                self = .started(pid: pid, isolation: fields.count > 1 ? String(fields[1]) : "")
            case "ended":
                let fields = rest.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
                guard fields.count >= 2, let reason = EndReason(rawValue: String(fields[0])), let status = Int32(fields[1]) else { return nil }
                self = .ended(reason, status: status, detail: fields.count > 2 ? String(fields[2]) : "")
            default: return nil
            }
        }

        static func oneLine(_ text: String) -> String {
            text.replacingOccurrences(of: "\n", with: " ").replacingOccurrences(of: "\r", with: " ")
        }
    }

    /// How often a guard refreshes its session's lock: every `refresh-rate` seconds, or a third
    /// of the lease bound when that is sooner. With only `refresh-rate` (20 s against a bound
    /// of 27 s by default) one refresh late by 7 s ended a session: a guard starved of the CPU
    /// on a loaded machine (a burst of starts, a build) lost its lease and its session was
    /// killed without saving. A third of the bound takes a stall of two thirds of it (18 s by
    /// default) to lose a lease, and costs one more small write to the lock file a minute.
    public static func refreshInterval(refreshRate: Int, timeoutInterval: Int) -> Double {
        min(Double(refreshRate), leaseBound(timeoutInterval: timeoutInterval) / 3)
    }

    /// The lease bound: a guard ends its session when no refresh has succeeded for this many
    /// seconds, which is `timeout-interval` less a margin (a tenth of it, at least half a
    /// second) for ending the processes and for clock differences between the nodes and the
    /// shared storage.
    public static func leaseBound(timeoutInterval: Int) -> Double {
        Double(timeoutInterval) - max(0.5, Double(timeoutInterval) / 10)
    }

    /// How long droverd may say nothing before its sessions are ended: half of
    /// `timeout-interval`, so a paused node's sessions become movable well before a
    /// contender's wait for the lock (`timeout-interval` and 5 s) runs out.
    public static func droverdSilenceBound(timeoutInterval: Int) -> Double {
        max(1, Double(timeoutInterval) / 2)
    }

    /// Nanoseconds from `then` to `now` on the monotonic clock, zero when `then` is the later.
    ///
    /// The guard's watchdog reads the clock, then the time another thread stamped (the last
    /// word from droverd, the last good refresh). A stamp made between the two reads is later
    /// than `now`: a plain unsigned difference wraps around to centuries, and the watchdog ended
    /// a healthy session as "droverd-silent" the moment droverd spoke (about one session in
    /// 3,600 in a burst of starts on a loaded machine).
    public static func elapsed(since then: UInt64, now: UInt64) -> UInt64 {
        now > then ? now - then : 0
    }

    /// What the guard's watchdog concludes at `now` (monotonic nanoseconds) from the last good
    /// refresh and droverd's last word: the session's end, or nil while both are recent enough.
    /// The lease is judged first: a lease past its bound is lost whatever droverd says.
    public static func watchdogVerdict(now: UInt64, lastRefresh: UInt64, lastWord: UInt64,
                                       leaseBound: UInt64, silenceBound: UInt64) -> EndReason? {
        if elapsed(since: lastRefresh, now: now) > leaseBound { return .leaseLost }
        if elapsed(since: lastWord, now: now) > silenceBound { return .droverdSilent }
        return nil
    }
}

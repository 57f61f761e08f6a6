import CShims
import Foundation

/// Starting and watching session processes.
enum SessionProcess {
    /// A system account.
    struct Account: Sendable {
        var name: String
        var uid: uid_t
        var gid: gid_t
        var home: String

        /// Where a session of this account keeps its saved state (in the shared home).
        func stateDirectory(_ id: String) -> String { home + "/.local/share/drover/sessions/" + id }
    }

    /// The account `name` (`getpwnam_r`: safe beside other threads' look-ups).
    static func account(_ name: String) -> Account? {
        var entry = passwd()
        var found: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16_384)
        guard getpwnam_r(name, &entry, &buffer, buffer.count, &found) == 0, found != nil else { return nil }
        return Account(name: name, uid: entry.pw_uid, gid: entry.pw_gid, home: String(cString: entry.pw_dir))
    }

    static var currentAccount: Account? {
        var entry = passwd()
        var found: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16_384)
        guard getpwuid_r(geteuid(), &entry, &buffer, buffer.count, &found) == 0, found != nil else { return nil }
        return account(String(cString: entry.pw_name))
    }

    /// Runs `arguments` as `account` (its uid, gid and groups, when we are root) and returns
    /// what it printed (at most 4 KiB). For everything droverd does inside a user's home:
    /// root never opens, reads or deletes a path there, where the user's symlinks could lead it.
    /// Waits on a thread of its own, never on the cooperative pool.
    static func runAsUser(_ account: Account, _ arguments: [String]) async -> String {
        var command = arguments
        if geteuid() == 0, account.uid != geteuid() {
            command = ["/usr/bin/setpriv", "--reuid=\(account.uid)", "--regid=\(account.gid)", "--init-groups", "--"] + arguments
        }
        let run = command
        return await withCheckedContinuation { continuation in
            Thread {
                continuation.resume(returning: runAndCollect(run, home: account.home))
            }.start()
        }
    }

    private static func runAndCollect(_ command: [String], home: String) -> String {
        var output: [Int32] = [0, 0]
        guard pipe(&output) == 0 else { return "" }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, output[1], 1)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        drover_spawn_close_from(&actions, 3)
        let argv = command.map { strdup($0) } + [nil]
        let envp = (["PATH=/usr/bin:/bin", "HOME=\(home)", "LANG=C.UTF-8"] as [String]).map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, command[0], &actions, nil, argv, envp)
        close(output[1])
        defer { close(output[0]) }
        guard spawned == 0 else { return "" }
        var collected: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while collected.count < 4096 {
            let n = buffer.withUnsafeMutableBytes { read(output[0], $0.baseAddress, $0.count) }
            if n <= 0 { break }
            collected += buffer[0..<min(n, 4096 - collected.count)]
        }
        var status: Int32 = 0
        kill(pid, SIGKILL)  // done reading (or it printed too much): it has nothing more to say
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        return String(decoding: collected, as: UTF8.self)
    }

    /// A TCP port free on 127.0.0.1 right now.
    static func freeLoopbackPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = in_addr_t(0x7f00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard ok else { throw SessionError.launchFailed("no free loopback port (\(String(cString: strerror(errno))))") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Whether something accepts connections on 127.0.0.1:`port`.
    static func answers(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = in_addr_t(0x7f00_0001).bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    /// Starts `command` through `/bin/sh` as `account`, in its home, with `environment`; its
    /// output goes to `logFile`. `setpriv` gives it a parent-death signal (so it never outlives
    /// a killed node, where it would run twice once re-placed) and, when we are root and the
    /// account is not, the account's uid, gid and groups.
    static func spawn(command: String, account: Account, environment: [String: String], logFile: String) throws -> pid_t {
        var arguments = ["/usr/bin/setpriv", "--pdeathsig", "KILL"]
        if geteuid() == 0, account.uid != 0 {
            arguments += ["--reuid=\(account.uid)", "--regid=\(account.gid)", "--init-groups"]
        }
        // The shell starts it in the home directory ($HOME is in the environment).
        arguments += ["--", "/bin/sh", "-c", "cd \"$HOME\" 2>/dev/null; exec " + command]
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logFile, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Nothing else of ours: an inherited client socket would stay open in the session
        // after droverd closed it, and that client would wait for the close forever.
        drover_spawn_close_from(&actions, 3)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // A fresh process group, so signals meant for droverd's terminal do not reach it.
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attributes, 0)
        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, arguments[0], &actions, &attributes, argv, envp)
        guard status == 0 else { throw SessionError.launchFailed("cannot start the session command (\(String(cString: strerror(status))))") }
        return pid
    }

    /// The exit status if `pid` (our child) has ended, reaping it.
    static func reap(_ pid: pid_t) -> Int32? {
        var status: Int32 = 0
        let result = waitpid(pid, &status, WNOHANG)
        if result == pid { return status }
        if result < 0, errno == ECHILD { return -1 }
        return nil
    }
}

/// A session operation that failed, with the message a user or operator sees and the HTTP
/// status it is answered with.
public enum SessionError: Error, Equatable, CustomStringConvertible {
    case notFound
    case launchFailed(String)
    case unavailable(String)
    /// The node already starts `max-starting-sessions` sessions; try again shortly.
    case busy(String)

    public var description: String {
        switch self {
        case .notFound: "no such session"
        case .launchFailed(let reason): "the session could not start: \(reason)"
        case .unavailable(let reason): reason
        case .busy(let reason): reason
        }
    }

    /// 404 for a missing session, 429 for a node at its start limit, 500 for a start that
    /// failed, 503 for a session or node that is not available right now.
    public var httpStatus: Int {
        switch self {
        case .notFound: 404
        case .busy: 429
        case .launchFailed: 500
        case .unavailable: 503
        }
    }

    /// Seconds to send in `Retry-After`, for the answers worth retrying.
    public var retryAfterSeconds: Int? {
        switch self {
        case .busy: 1
        case .unavailable: 5
        case .notFound, .launchFailed: nil
        }
    }
}

import CShims
import DroverKernel
import DroverSessionProtocol
import Foundation

/// Every process of one session: its main process and whatever it starts, in a cgroup of its
/// own where the machine offers one, so even a process that left the process group (`setsid`)
/// is ended with the rest.
struct SessionProcessGroup: Sendable {
    /// The main process (also the process group's id).
    let pid: pid_t
    /// Its cgroups; nil when none could be made (not root, or none mounted): then only the
    /// process group holds it, and a process that calls `setsid` escapes.
    let cgroups: SessionCgroupSet?
    /// The memory counters before the command joined its cgroups.
    let memoryBaseline: SessionCgroupSet.MemoryBaseline?

    /// How its processes are held together, for the `started` event.
    var isolation: String { cgroups?.words ?? "process-group" }

    /// Makes the session's cgroup and starts the command in it as the user. The process puts
    /// itself into the cgroup before it runs anything of the user's (a shell writes its own pid
    /// into `cgroup.procs`, then execs), so nothing can start outside it.
    static func start(spec: SessionGuardProtocol.Spec) throws -> SessionProcessGroup {
        // The endpoint: a socket the guard binds (descriptor 3), or the session's own folder
        // where the program binds its socket (and finds its secret).
        var listener: Int32?
        switch spec.endpointType {
        case .inherited, .systemd:
            let fd = try listen(at: spec.socketPath)
            if spec.endpointType == .systemd { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
            listener = fd
        case .unixSocket, .tcpPort:
            break
        }
        defer { if let listener { close(listener) } }
        if let run = spec.runDirectory { try RunDirectory.make(run, uid: spec.uid, gid: spec.gid, secret: spec.secret) }
        let cgroups: SessionCgroupSet?
        do {
            cgroups = try SessionCgroupSet.make(spec.sessionID, limits: spec.limits ?? SessionLimits())
        } catch {
            if let run = spec.runDirectory { RunDirectory.remove(run, uid: spec.uid) }
            throw LockError(path: spec.arguments?.first ?? spec.command, "cannot limit the session: \(error)")
        }
        var setpriv = ["/usr/bin/setpriv", "--pdeathsig", "KILL"]
        if geteuid() == 0, spec.uid != 0 {
            setpriv += ["--reuid=\(spec.uid)", "--regid=\(spec.gid)", "--init-groups"]
        }
        // Everything inside the user's home is done by the user's own shell, after the drop of
        // rights: making the state folder and opening session.log (a symlink planted there
        // reaches only what the user could write anyway). Nothing here runs as root in it.
        let prologue = "umask 077; mkdir -p \"$DROVER_SESSION_STATE_DIR\" || exit 125; "
            + "exec >>\"$DROVER_SESSION_STATE_DIR/session.log\" 2>&1 || exit 125; cd \"$HOME\" 2>/dev/null; "
        if let arguments = spec.arguments {
            // A kind: its argument vector, never a shell line, run by the user's login shell
            // (`$SHELL -l`: /etc/profile and the user's profile, so a conda or virtual
            // environment on the user's PATH is found). systemd's convention names the
            // program's own pid, which the exec chain keeps.
            let activation = spec.endpointType == .systemd ? "LISTEN_PID=$$; LISTEN_FDS=1; LISTEN_FDNAMES=drover; export LISTEN_PID LISTEN_FDS LISTEN_FDNAMES; " : ""
            let login = spec.loginShell ?? "/bin/sh"
            // fish passes what follows -c's script as $argv (no $0); POSIX shells as "$0" "$@".
            let run = (login as NSString).lastPathComponent == "fish" ? "exec \"$0\" -l -c 'exec $argv' \"$@\"" : "exec \"$0\" -l -c 'exec \"$@\"' \"$0\" \"$@\""
            setpriv += ["--", "/bin/sh", "-c", prologue + activation + run, login] + arguments
        } else {
            setpriv += ["--", "/bin/sh", "-c", prologue + "exec " + spec.command]
        }
        var arguments = setpriv
        if let cgroups {
            // Into every cgroup of the session (its limits are in force before the user's first
            // instruction). The session id is hex, the folders droverd's: single quotes suffice.
            let join = cgroups.folders.map { "echo $$ > '\($0)/cgroup.procs' || exit 126; " }.joined()
            arguments = ["/bin/sh", "-c", join + "exec \"$@\"", "drover-session"] + setpriv
        }
        let baseline = cgroups?.memoryBaseline
        var descriptors: [(Int32, Spawn.Descriptor)] = [(0, .null), (1, .null), (2, .null)]
        // The inherited endpoint: the listening socket, as descriptor 3.
        if let listener { descriptors.append((3, .inherited(listener))) }
        let pid: pid_t
        do {
            pid = try Spawn.start(arguments, environment: spec.environment.map { "\($0.key)=\($0.value)" },
                                  descriptors: descriptors, newProcessGroup: true)
        } catch {
            cgroups?.remove()
            if let run = spec.runDirectory { RunDirectory.remove(run, uid: spec.uid) }
            throw LockError(path: spec.arguments?.first ?? spec.command, "cannot start the session command (\(error))")
        }
        return SessionProcessGroup(pid: pid, cgroups: cgroups, memoryBaseline: baseline)
    }

    /// Binds and listens on the session's Unix socket. Its folder and the socket are droverd's
    /// user's alone (0700 / 0600): no other local user, the session's own included, can
    /// connect to it; only droverd reaches the session.
    static func listen(at path: String) throws -> Int32 {
        let folder = (path as NSString).deletingLastPathComponent
        mkdir(folder, 0o700)
        var info = stat()
        guard lstat(folder, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR, info.st_uid == geteuid() else {
            throw LockError(path: folder, "the sessions' socket folder must be a directory owned by droverd's user")
        }
        chmod(folder, 0o700)
        unlink(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw LockError(path: path, "socket: \(String(cString: strerror(errno)))") }
        guard let bound = UnixSocketAddress.with(path, { bind(fd, $0, $1) }) else {
            close(fd)
            throw LockError(path: path, "the socket path is too long; use a shorter server-data-dir")
        }
        guard bound == 0, chmod(path, 0o600) == 0, Foundation.listen(fd, 256) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw LockError(path: path, "cannot listen on the session's socket (\(reason))")
        }
        return fd
    }

    /// Waits for the main process to end; its wait status. The process is left a zombie, not
    /// reaped: until ``reapMain()`` its pid, and the process group's id, stay the session's, so
    /// a SIGKILL sent to them meanwhile cannot reach a process that took the number over (pids
    /// wrap within minutes on a busy machine, and the guard runs as root).
    func waitForMain() -> Int32 {
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) < 0 {
            if errno != EINTR { return -1 }
        }
        let code = info.si_code
        let value = info._sifields._sigchld.si_status
        // As waitpid encodes it: exit status in the high byte, or the signal number.
        return code == CLD_EXITED ? (value & 0xff) << 8 : value & 0x7f
    }

    /// Reaps the main process once nothing will signal it again (the guard's very end).
    func reapMain() {
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) < 0, errno == EINTR {}
    }

    /// SIGKILL to every process of the session.
    func killAll() {
        kill(-pid, SIGKILL)
        kill(pid, SIGKILL)
        if let path = cgroups?.unified {
            if !CgroupHost.write("1", to: path + "/cgroup.kill") {
                // Before Linux 5.14: freeze, kill each, thaw.
                _ = CgroupHost.write("1", to: path + "/cgroup.freeze")
                killEach(in: path)
                _ = CgroupHost.write("0", to: path + "/cgroup.freeze")
            }
        } else if let path = cgroups?.freezer {
            _ = CgroupHost.write("FROZEN", to: path + "/freezer.state")
            killEach(in: path)
            _ = CgroupHost.write("THAWED", to: path + "/freezer.state")
        } else if let path = cgroups?.processes {
            killEach(in: path)
        }
    }

    /// Waits (at most `seconds`) until no process of the session is left.
    func waitUntilEmpty(seconds: Double) {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let empty: Bool
            if let path = cgroups?.processes {
                empty = CgroupHost.members(of: path).allSatisfy { $0 == pid && Self.isZombie($0) }
            } else {
                // The main process stays in the group as a zombie until reaped.
                empty = Self.groupMembers(pid).allSatisfy { $0 == pid && Self.isZombie($0) }
            }
            if empty { return }
            killAll()
            usleep(20_000)
        }
    }

    /// - Returns: the cgroup folders that could not be removed.
    func removeCgroup() -> [String] {
        cgroups?.remove() ?? []
    }

    /// Whether the kernel's OOM killer ended a process of the session for reaching its own
    /// memory limit.
    var wentOverMemoryLimit: Bool {
        guard let cgroups, let memoryBaseline else { return false }
        return cgroups.wentOverMemoryLimit(since: memoryBaseline)
    }

    /// The processes whose process group is `group`, from `/proc`.
    static func groupMembers(_ group: pid_t) -> [pid_t] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(pid_t.init).filter { processGroup(of: $0) == group }
    }

    /// Field 5 of `/proc/PID/stat` (after the parenthesised command name, which may hold
    /// spaces and parentheses itself).
    static func processGroup(of pid: pid_t) -> pid_t? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 2 ? pid_t(fields[2]) : nil
    }

    static func isZombie(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return true }
        return stat[stat.index(after: close)...].split(separator: " ").first == "Z"
    }

    private func killEach(in path: String) {
        for member in CgroupHost.members(of: path) { kill(member, SIGKILL) }
    }
}

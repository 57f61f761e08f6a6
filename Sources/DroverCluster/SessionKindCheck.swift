public import DroverKernel
public import DroverSessionProtocol
import Foundation

/// Whether this node can run each configured session kind: its program is there and users may
/// execute it, and users can reach the session's folder where the kind needs one. A node offers
/// (publishes in its registry row, lists in `GET /api/kinds`, is placed) only the kinds it can
/// run; droverd logs the rest at start and `drover verify` reports them.
public struct SessionKindAvailability: Sendable, Equatable, CustomStringConvertible {
    public var kind: String
    public var offered: Bool
    /// Why it is not offered, or what could not be checked.
    public var notes: [String]

    public var description: String {
        "\(kind): " + (offered ? "offered" : "NOT offered") + (notes.isEmpty ? "" : " (" + notes.joined(separator: "; ") + ")")
    }
}

public enum SessionKindCheck {
    /// Checks every kind of `config`. `asRoot`: droverd starts sessions as other users, so a
    /// program must be executable by them (read from the mode bits of the file and the folders
    /// above it), not only by droverd. With `auth-none` every session is droverd's own user's.
    ///
    /// A kind with `memory-limit` or `cpu-limit` is offered only where the node can set them
    /// (``CgroupHost/support(_:writable:)``): a node that cannot is not placed such sessions,
    /// rather than running them unlimited.
    public static func check(_ config: DroverConfiguration, cgroups: CgroupHost = .current()) -> [SessionKindAvailability] {
        check(config, asRoot: geteuid() == 0 && !config.server.authNone, cgroups: cgroups)
    }

    static func check(_ config: DroverConfiguration, asRoot: Bool, cgroups: CgroupHost = .current()) -> [SessionKindAvailability] {
        config.kinds.kinds.map { kind in
            var notes: [String] = []
            var offered = true
            let program: String
            var searchPath = "/usr/local/bin:/usr/bin:/bin"
            if let line = kind.shellLine {
                program = String(SessionManager.resolveCommand(line, against: config.directory).split(separator: " ").first ?? "")
            } else {
                program = SessionManager.resolveProgram(kind.command[0], against: config.directory)
                if let path = kind.environment.last(where: { $0.name == "PATH" }) { searchPath = path.value }
            }
            if program.contains("/") {
                if let problem = executableProblem(program, asRoot: asRoot) {
                    notes.append(problem)
                    offered = false
                }
            } else if let found = searchPath.split(separator: ":").map({ String($0) + "/" + program }).first(where: { access($0, X_OK) == 0 }) {
                if let problem = executableProblem(found, asRoot: asRoot) {
                    notes.append(problem)
                    offered = false
                }
            } else if kind.shellLine == nil {
                notes.append("'\(program)' is looked up on each user's login PATH when a session starts (not found on \(searchPath), so not checked here)")
            } else {
                // A shell line may start with anything the shell understands (an assignment, a builtin).
                notes.append("'\(program)' is not on \(searchPath); session-command is a shell line, so it is not checked further")
            }
            if asRoot, kind.endpoint == .unixSocket || kind.usesSecret,
               let blocked = unsearchableFolder((config.sessionRunDirectory as NSString).deletingLastPathComponent) {
                notes.append("users cannot pass through \(blocked) to reach their session's folder in \(config.sessionRunDirectory) (session-run-dir); run: chmod o+x \(blocked)")
                offered = false
            }
            for controller in kind.limits.controllers {
                let support = cgroups.support(controller)
                if case .missing(let why) = support {
                    let key = controller == .memory ? "memory-limit" : "cpu-limit"
                    notes.append("\(key) cannot be enforced here: \(why); not offered rather than run unlimited")
                    offered = false
                }
            }
            return SessionKindAvailability(kind: kind.name, offered: offered, notes: notes)
        }
    }

    /// Why users could not execute `path`, or nil when they can.
    static func executableProblem(_ path: String, asRoot: Bool) -> String? {
        var info = stat()
        guard stat(path, &info) == 0 else { return "its program \(path) does not exist" }
        guard (info.st_mode & S_IFMT) == S_IFREG else { return "its program \(path) is not a regular file" }
        guard asRoot else {
            return access(path, X_OK) == 0 ? nil : "its program \(path) is not executable (chmod +x)"
        }
        guard info.st_mode & S_IXOTH != 0 else { return "users cannot execute its program \(path) (mode \(String(info.st_mode & 0o777, radix: 8)); chmod o+rx)" }
        if let blocked = unsearchableFolder((path as NSString).deletingLastPathComponent) {
            return "users cannot reach its program \(path): \(blocked) is not searchable by them (chmod o+x \(blocked))"
        }
        return nil
    }

    /// The first folder from `/` down to `path` (inclusive) that other users cannot pass through.
    public static func unsearchableFolder(_ path: String) -> String? {
        var current = ""
        for component in path.split(separator: "/") {
            current += "/" + component
            var info = stat()
            guard stat(current, &info) == 0 else { return nil }  // made later (server-data-dir)
            if info.st_mode & S_IXOTH == 0 { return current }
        }
        return nil
    }
}

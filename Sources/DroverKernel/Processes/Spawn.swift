import CShims
import Foundation

/// Starting a process with `posix_spawn`, the one way Drover starts one: the descriptors the
/// child gets are named, and every other descriptor of this process is closed in the child,
/// so no pipe, socket or lock file leaks into it.
public enum Spawn {
    /// What one of the child's descriptors is.
    public enum Descriptor: Sendable {
        /// `/dev/null`, opened for reading (descriptor 0) or writing (any other).
        case null
        /// A file opened with `flags` (and `mode` when it is created).
        case file(String, flags: Int32, mode: UInt32 = 0o644)
        /// A descriptor of this process, duplicated.
        case inherited(Int32)
    }

    /// Starts `arguments[0]` with `arguments` and exactly `environment` (`NAME=value`).
    /// - Parameters:
    ///   - descriptors: the child's descriptors, set up in order; every other one is closed,
    ///     except 0, 1 and 2 when not named (they stay this process's).
    ///   - newProcessGroup: the child leads a process group of its own.
    /// - Returns: the child's pid.
    /// - Throws: the `errno` of a spawn that failed, as ``Failure``.
    public static func start(_ arguments: [String], environment: [String], descriptors: [(Int32, Descriptor)],
                             newProcessGroup: Bool = false) throws(Failure) -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (target, source) in descriptors {
            switch source {
            case .null: posix_spawn_file_actions_addopen(&actions, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0)
            case .file(let path, let flags, let mode): posix_spawn_file_actions_addopen(&actions, target, path, flags, mode)
            case .inherited(let fd): posix_spawn_file_actions_adddup2(&actions, fd, target)
            }
        }
        drover_spawn_close_from(&actions, max(3, (descriptors.map(\.0).max() ?? -1) + 1))
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        if newProcessGroup {
            posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
            posix_spawnattr_setpgroup(&attributes, 0)
        }
        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, arguments[0], &actions, &attributes, argv, envp)
        guard status == 0 else { throw Failure(errno: status) }
        return pid
    }

    /// A spawn that failed, with its reason.
    public struct Failure: Error, CustomStringConvertible {
        public let errno: Int32
        public var description: String { String(cString: strerror(errno)) }
    }
}

import CShims
public import Foundation
import Synchronization

/// The built `droverd`, `drover` and other products, run as real processes.
public enum Executable {
    /// The folder holding the built products: `DROVER_BIN_DIR`, else the test bundle's own
    /// folder (`.build/debug`).
    public static var productsDirectory: String {
        if let dir = ProcessInfo.processInfo.environment["DROVER_BIN_DIR"] { return dir }
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.isExecutableFile(atPath: url.path + "/droverd") { return url.path }
        }
        return FileManager.default.currentDirectoryPath + "/.build/debug"
    }

    /// A product's path; an absolute `name` is used as it is.
    public static func path(_ name: String) -> String { name.hasPrefix("/") ? name : productsDirectory + "/" + name }

    /// What a finished command printed and how it exited.
    public struct Result: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    /// Runs `name` with `arguments` to completion, sleeping (not blocking a thread) meanwhile.
    public static func run(_ name: String, _ arguments: [String], environment: [String: String] = [:],
                           stdin: String? = nil, timeout: TimeInterval = 60) async throws -> Result {
        let process = try RunningProcess(name, arguments, environment: environment, stdin: stdin)
        let status = try await process.wait(timeout: timeout)
        return Result(status: status, stdout: process.stdout, stderr: process.stderr)
    }

    /// Starts `path` and does not wait for it: for clean-up in a `deinit`, which cannot await
    /// and must not block. Its output is dropped.
    public static func launchDetached(_ path: String, _ arguments: [String]) {
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        drover_spawn_close_from(&actions, 3)
        var child: pid_t = 0
        _ = posix_spawn(&child, path, &actions, nil, argv, environ)
    }
}

/// A product running in the background, its output captured to files.
public final class RunningProcess: Sendable {
    public let pid: Int32
    private let output: TemporaryDirectory
    private let exitStatus = Mutex<Int32?>(nil)

    /// Starts `name` from the products directory with `posix_spawn`.
    /// - Parameters:
    ///   - environment: added to this process's environment (`DROVER_CONFIG_DIR` is dropped).
    ///   - stdin: text fed to standard input; nil means /dev/null.
    public init(_ name: String, _ arguments: [String], environment: [String: String] = [:], stdin: String? = nil) throws {
        output = TemporaryDirectory(prefix: "drover-proc")
        try output.write("in", stdin ?? "")
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "DROVER_CONFIG_DIR")
        for (key, value) in environment { env[key] = value }
        let executable = Executable.path(name)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, output.url("in"), O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output.url("out"), O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, output.url("err"), O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        drover_spawn_close_from(&actions, 3)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var child: pid_t = 0
        let result = posix_spawn(&child, executable, &actions, nil, argv, envp)
        guard result == 0 else {
            throw TestFailure("cannot start \(executable): \(String(cString: strerror(result)))")
        }
        pid = child
    }

    public var stdout: String { output.read("out") ?? "" }
    public var stderr: String { output.read("err") ?? "" }

    public func signal(_ signal: Int32) { kill(pid, signal) }

    /// The exit status once the process has ended (128 + signal number when a signal ended it).
    public var status: Int32? {
        exitStatus.withLock { stored in
            if let stored { return stored }
            var raw: Int32 = 0
            guard waitpid(pid, &raw, WNOHANG) == pid else { return nil }
            let signal = raw & 0x7f
            stored = signal == 0 ? (raw >> 8) & 0xff : 128 + signal
            return stored
        }
    }

    public var isRunning: Bool { status == nil }

    /// Waits for exit (sleeping, so other tests keep running); SIGKILLs and throws after `timeout`.
    public func wait(timeout: TimeInterval) async throws -> Int32 {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let status { return status }
            if Date() > deadline {
                kill(pid, SIGKILL)
                _ = try? await wait(timeout: 5)
                throw TestFailure("process did not exit within \(timeout)s; stderr: \(stderr)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Polls `check` until it returns true, or throws after `timeout` or if the process exits.
    public func waitUntil(timeout: TimeInterval = 30, _ what: String, _ check: () async throws -> Bool) async throws {
        try await eventually(what, timeout: timeout, every: .milliseconds(50),
                             stop: { status.map { "process exited (\($0)); stderr: \(stderr)" } }, check)
    }

    deinit {
        if status == nil {
            kill(pid, SIGKILL)
            var raw: Int32 = 0
            waitpid(pid, &raw, 0)
        }
        // Keep what every process printed for the suite's log scan (scripts/test.sh): no key or
        // password may ever appear in a log line.
        if let logs = ProcessInfo.processInfo.environment["DROVER_TEST_LOG_DIR"] {
            for stream in ["out", "err"] {
                try? FileManager.default.copyItem(atPath: output.url(stream), toPath: "\(logs)/\(pid).\(stream)")
            }
        }
    }
}

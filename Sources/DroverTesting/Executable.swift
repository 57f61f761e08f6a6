import CShims
import DroverCluster
import DroverKernel
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

    /// A product the tests' accounts execute (a session program run as a user): its own path
    /// when every folder above it lets other users through; else a copy, made once per build of
    /// it, in `/tmp/drover-test-products` (root's, mode 0755). A clone in root's home (0700) or
    /// in a `mktemp -d` workspace then runs its sessions as it does anywhere else.
    public static func pathForUsers(_ name: String) -> String {
        let original = path(name)
        guard let blocked = SessionKindCheck.unsearchableFolder((original as NSString).deletingLastPathComponent) else { return original }
        let folder = "/tmp/drover-test-products"
        mkdir(folder, 0o755)
        var info = stat()
        guard lstat(folder, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR, info.st_uid == geteuid(), info.st_mode & 0o022 == 0 else {
            fatalError("other users cannot reach \(original) (\(blocked) is closed to them), and \(folder) is not a folder of this user's that only it may write; "
                + "remove \(folder), or put the clone where other users can pass (chmod o+x \(blocked))")
        }
        chmod(folder, 0o755)
        guard stat(original, &info) == 0 else { return original }
        let copy = folder + "/\(name)-\(info.st_size)-\(info.st_mtim.tv_sec)"
        if access(copy, X_OK) == 0 { return copy }
        let temporary = copy + ".\(getpid())"
        do {
            try? FileManager.default.removeItem(atPath: temporary)
            try FileManager.default.copyItem(atPath: original, toPath: temporary)
            chmod(temporary, 0o755)
            guard rename(temporary, copy) == 0 else { return original }
        } catch {
            fatalError("other users cannot reach \(original) (\(blocked) is closed to them), and it cannot be copied to \(folder): \(error)")
        }
        return copy
    }

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
        let environment = ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" }
        _ = try? Spawn.start([path] + arguments, environment: environment, descriptors: [(0, .null)])
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
        do {
            pid = try Spawn.start([executable] + arguments, environment: env.map { "\($0.key)=\($0.value)" }, descriptors: [
                (0, .file(output.url("in"), flags: O_RDONLY)),
                (1, .file(output.url("out"), flags: O_WRONLY | O_CREAT | O_TRUNC)),
                (2, .file(output.url("err"), flags: O_WRONLY | O_CREAT | O_TRUNC)),
            ])
        } catch {
            throw TestFailure("cannot start \(executable): \(error)")
        }
    }

    public var stdout: String { output.read("out") ?? "" }
    public var stderr: String { output.read("err") ?? "" }

    /// Sends `signal`, unless the process has ended and been reaped: its pid may belong to
    /// another process by now (pids wrap quickly under this suite's churn; `pid_max` is often
    /// 32768), and a late SIGKILL would hit that one. A child not yet reaped keeps its pid, so
    /// checking and signalling under one lock is safe.
    public func signal(_ signal: Int32) {
        exitStatus.withLock { stored in
            if stored == nil { kill(pid, signal) }
        }
    }

    /// The exit status once the process has ended (128 + signal number when a signal ended it).
    public var status: Int32? {
        exitStatus.withLock { stored in
            if let stored { return stored }
            var raw: Int32 = 0
            let waited = waitpid(pid, &raw, WNOHANG)
            if waited == -1, errno == ECHILD {
                // Reaped elsewhere: gone, and its pid no longer ours to signal.
                stored = -1
                return stored
            }
            guard waited == pid else { return nil }
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
                signal(SIGKILL)
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
            signal(SIGKILL)
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

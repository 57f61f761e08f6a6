public import DroverKernel
import Foundation

/// Real system accounts and a PAM service for sign-in tests. Needs root (CI runs as root).
public enum SystemUsers {
    public static let pamService = "drover-test"
    public static let password = "Drover-test-pw-1"

    public static var available: Bool {
        geteuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/useradd")
            && FileManager.default.isExecutableFile(atPath: "/usr/sbin/chpasswd")
    }

    /// An account as the system has it.
    public typealias Account = SystemAccount

    /// The account `name`, or nil (a ``SystemAccount``: tests run side by side, and `getpwnam`'s
    /// answer lives in one static buffer that the next look-up on any thread overwrites; a test
    /// once read another account's home from it and removed a file there instead of its own).
    public static func account(_ name: String) -> Account? { SystemAccount.named(name) }

    /// The name of the account this process runs as.
    public static var currentName: String { SystemAccount.withID(geteuid())?.name ?? "root" }

    /// Creates the accounts (with homes) if missing, sets their password, and writes the PAM
    /// service `drover-test` (pam_unix). Idempotent.
    public static func ensure(_ names: [String]) async throws {
        try "auth required pam_unix.so\naccount required pam_unix.so\n".write(toFile: "/etc/pam.d/\(pamService)", atomically: true, encoding: .utf8)
        for name in names where account(name) == nil {
            _ = try await Executable.run("/usr/sbin/useradd", ["-m", "-s", "/bin/sh", name])
        }
        let result = try await Executable.run("/usr/sbin/chpasswd", [], stdin: names.map { "\($0):\(password)" }.joined(separator: "\n") + "\n")
        guard result.status == 0 else { throw TestFailure("chpasswd failed: \(result.stderr)") }
    }

    /// Every live process (not a zombie) started for session `id`, whatever its name: the
    /// session's main process and anything it started, found by `DROVER_SESSION_ID` in their
    /// environment.
    public static func processes(ofSession id: String) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        let wanted = Array("DROVER_SESSION_ID=\(id)".utf8)
        return entries.compactMap { name -> Int32? in
            guard let pid = Int32(name), let data = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return nil }
            let state = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8))?.split(separator: ")").last?.split(separator: " ").first
            guard state != "Z" else { return nil }
            return data.split(separator: 0).contains { Array($0) == wanted } ? pid : nil
        }
    }

    /// Every live process (not a zombie) whose command line contains `text`.
    public static func processes(matching text: String) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        let wanted = Array(text.utf8)
        return entries.compactMap { name -> Int32? in
            guard let pid = Int32(name), let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
                  data.count >= wanted.count else { return nil }
            let state = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8))?.split(separator: ")").last?.split(separator: " ").first
            guard state != "Z" else { return nil }
            let bytes = Array(data)
            return (0...(bytes.count - wanted.count)).contains { Array(bytes[$0..<($0 + wanted.count)]) == wanted } ? pid : nil
        }
    }

    /// The main process of each running session: (session id, pid), one entry per process.
    public static func runningSessions() -> [(id: String, pid: Int32)] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { name -> (String, Int32)? in
            // The name first: reading another process's environment is far dearer (it takes
            // that process's memory lock), and watchers call this ten times a second.
            guard let pid = Int32(name), (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.hasPrefix("drover-demo") == true,
                  let data = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return nil }
            for variable in data.split(separator: 0) where variable.starts(with: Array("DROVER_SESSION_ID=".utf8)) {
                return (String(decoding: variable.dropFirst(18), as: UTF8.self), pid)
            }
            return nil
        }
    }

    /// The ids of running session processes, one entry per process, from their environment.
    public static func runningSessionIDs() -> [String] {
        runningSessions().map(\.id)
    }
}

import DroverKernel
import DroverPlugins
import DroverTesting
import Foundation
import Logging
import Synchronization
import Testing

enum LockKind: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case memory
    case linkbased
    case advisory

    var testDescription: String { rawValue }
    static let onDisk: [LockKind] = [.linkbased, .advisory]
}

/// A directory standing in for shared storage, a config dir naming a provider, and the provider.
struct LockHarness: Sendable {
    let kind: LockKind
    let config: TemporaryDirectory
    let provider: any LockProvider

    init(_ kind: LockKind, refreshRate: Int = 20, timeout: Int = 30, logging: Bool = false) throws {
        self.kind = kind
        config = TemporaryDirectory(prefix: "drover-locks")
        try config.write("rserver.conf", "server-data-dir=data\nserver-shared-storage-path=shared\n")
        try FileManager.default.createDirectory(atPath: config.url("shared"), withIntermediateDirectories: true)
        let type = kind == .memory ? "linkbased" : kind.rawValue
        try config.write("file-locks", "lock-type=\(type)\nrefresh-rate=\(refreshRate)\ntimeout-interval=\(timeout)\n"
                         + (logging ? "enable-logging=1\nlog-file=locks.log\n" : ""))
        if kind == .memory {
            provider = InMemoryLockProvider()
        } else {
            let loaded = try DroverConfiguration.load(directory: config.path)
            let context = PluginContext(configDirectory: config.path, dataDirectory: config.path, secureCookieKey: nil, logger: Logger(label: "t"))
            provider = try PluginCatalog.builtin.makeLockProvider(loaded.fileLocks, context: context)
        }
    }

    /// A lock path inside the shared directory.
    func path(_ name: String = "session.lock") -> String { config.url("shared/" + name) }

    /// Runs `drover-probe lock` against this harness's configuration.
    func probe(_ path: String, at: Double = 0, hold: Double = 0, noRefresh: Bool = false, umask: String? = nil) throws -> RunningProcess {
        var arguments = ["lock", "--config-dir", config.path, "--path", path, "--at", String(at), "--hold", String(hold)]
        if noRefresh { arguments.append("--no-refresh") }
        if let umask { arguments += ["--umask", umask] }
        return try RunningProcess("drover-probe", arguments)
    }
}

extension LockHarness {
    /// Starts `count` probe processes that try the lock at the same instant (each holding it
    /// 3 s if it wins) and returns what each said first: `acquired` or `busy`.
    func race(_ count: Int) async throws -> [String] {
        let start = Date().timeIntervalSince1970 + 2
        let racers = try (0..<count).map { _ in try probe(path(), at: start, hold: 3) }
        var outcomes: [String] = []
        for racer in racers {
            #expect(try await racer.wait(timeout: 30) == 0, "\(racer.stderr)")
            outcomes.append(racer.stdout.split(separator: "\n").first.map(String.init) ?? "")
        }
        return outcomes
    }
}

import ArgumentParser
import DroverCluster
import DroverServer
import DroverKernel
import DroverPlugins
import DroverTesting
import Foundation
import Logging

/// A helper the tests run as separate processes, to contend with each other through the real
/// plugins: the part of a node that a test needs, and nothing else.
@main
struct DroverProbe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drover-probe",
        abstract: "Test helper: act as one contending process against the configured plugins.",
        subcommands: [Claim.self, Lock.self, LockBench.self, Place.self, RegistryLoad.self, Cookie.self, DiagnosticsWrite.self, ReplayBench.self])
}

/// The configuration in `directory` and the context its plugins are built with.
func loadConfiguration(_ directory: String) throws -> (DroverConfiguration, PluginContext) {
    let config = try DroverConfiguration.load(directory: directory, pluginKeys: PluginCatalog.builtin.loadBalancerPluginKeys)
    let key = try? SecureCookieKey.load(from: config.secureCookieKeyPath)
    let context = PluginContext(config, key: key, logger: Logger(label: "drover-probe"))
    return (config, context)
}

/// Writes a line to standard output at once (unbuffered), so tests see it while we run.
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

/// Sleeps until `epoch` (seconds), so that processes started one by one race together.
func waitUntil(epoch: Double) async throws {
    let delay = epoch - Date().timeIntervalSince1970
    if delay > 0 { try await Task.sleep(for: .milliseconds(Int(delay * 1000))) }
}

struct Claim: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Try to move a suspended session to a node by compare-and-set; prints 'won' or 'lost'.")

    @Option var configDir: String
    @Option var session: String
    @Option var node: Int64
    @Option(help: "Start at this Unix time, to race with the others.") var at: Double = 0

    func run() async throws {
        let (config, context) = try loadConfiguration(configDir)
        let store = try PluginCatalog.builtin.makeRegistryStore(config.database, context: context)
        try await waitUntil(epoch: at)
        let won = try await store.transitionSession(session, from: SessionOwnership(node: nil, state: .suspended),
                                                    to: SessionOwnership(node: node, state: .starting))
        say(won ? "won" : "lost")
        await store.close()
    }
}

struct Lock: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Try once to take a lock with the configured provider; prints 'acquired' or 'busy', then holds it.")

    @Option var configDir: String
    @Option var path: String
    @Option(help: "Start at this Unix time, to race with the others.") var at: Double = 0
    @Option(help: "Seconds to hold the lock before releasing it.") var hold: Double = 0
    @Flag(help: "Hold without refreshing, as a hung holder would.") var noRefresh = false
    @Option(help: "Octal umask to run under, e.g. 077.") var umask: String?

    func run() async throws {
        if let umask, let mask = UInt32(umask, radix: 8) { _ = Foundation.umask(mode_t(mask)) }
        let (config, context) = try loadConfiguration(configDir)
        let provider = try PluginCatalog.builtin.makeLockProvider(config.fileLocks, context: context)
        try await waitUntil(epoch: at)
        guard let lock = try await provider.tryAcquireOnOwnThread(path) else {
            say("busy")
            return
        }
        say("acquired")
        let deadline = Date().addingTimeInterval(hold)
        while Date() < deadline {
            try await Task.sleep(for: .milliseconds(min(Int(provider.refreshInterval) * 1000, max(1, Int(deadline.timeIntervalSinceNow * 1000)))))
            if !noRefresh, Date() < deadline, try await !lock.refreshOnOwnThread() {
                say("lost")
                return
            }
        }
        try await lock.releaseOnOwnThread()
        say("released")
    }
}

struct LockBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lock-bench",
        abstract: "Acquire, refresh once and release one lock in a loop for a while; print JSON with operations and latency percentiles.")

    @Option var configDir: String
    @Option var lockType: String
    @Option var path: String
    @Option var seconds: Double = 5
    @Option(help: "Start at this Unix time, to run alongside the others.") var at: Double = 0

    func run() async throws {
        let (config, context) = try loadConfiguration(configDir)
        var locks = config.fileLocks
        locks.lockType = lockType
        let provider = try PluginCatalog.builtin.makeLockProvider(locks, context: context)
        try await waitUntil(epoch: at)
        // The blocking calls themselves, in a loop of their own on a thread of its own: what
        // is measured is the lock, not a thread hop per call.
        let (path, seconds) = (path, seconds)
        var latencies = try await onOwnThread {
            var latencies: [UInt64] = []
            let end = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
            while DispatchTime.now().uptimeNanoseconds < end {
                let started = DispatchTime.now().uptimeNanoseconds
                var lock = try provider.tryAcquire(path)
                while lock == nil {
                    usleep(UInt32.random(in: 200...1000))
                    lock = try provider.tryAcquire(path)
                }
                // One lease refresh per hold, as a session's guard refreshes its lock.
                _ = try lock?.refresh()
                try lock?.release()
                latencies.append(DispatchTime.now().uptimeNanoseconds - started)
            }
            return latencies
        }
        latencies.sort()
        func percentile(_ p: Double) -> Double {
            latencies.isEmpty ? 0 : Double(latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))]) / 1000
        }
        say("{\"ops\": \(latencies.count), \"seconds\": \(seconds), \"p50_us\": \(percentile(0.5)), \"p99_us\": \(percentile(0.99))}")
    }
}

struct Place: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Place N new sessions at once through the configured balancer and registry; prints 'placed N'.")

    @Option var configDir: String
    @Option var count: Int
    @Option(help: "Start at this Unix time, to race with the others.") var at: Double = 0
    @Option(help: "Write each placement's latency in milliseconds to this file, one per line.") var latencies: String?

    func run() async throws {
        let (config, context) = try loadConfiguration(configDir)
        let store = try PluginCatalog.builtin.makeRegistryStore(config.database, context: context)
        let lb = config.effectiveLoadBalancer
        let strategy = try PluginCatalog.builtin.makeBalancer(lb, context: context)
        let engine = PlacementEngine(store: store, strategy: strategy, heartbeatInterval: lb.heartbeatInterval, diagnostics: .off,
                                     maxSessionsPerNode: lb.maxSessionsPerNode)
        try await store.migrate()
        try await waitUntil(epoch: at)
        let times = try await withThrowingTaskGroup(of: Double.self) { group in
            for index in 0..<count {
                group.addTask {
                    let now = Date()
                    let started = DispatchTime.now().uptimeNanoseconds
                    _ = try await engine.placeNew(SessionRecord(id: Crypto.randomBytes(16).hexString, username: "user\(index)",
                                                                ownership: SessionOwnership(node: nil, state: .starting),
                                                                createdAt: now, lastActive: now, label: nil))
                    return Double(DispatchTime.now().uptimeNanoseconds - started) / 1_000_000
                }
            }
            var all: [Double] = []
            for try await time in group { all.append(time) }
            return all
        }
        if let latencies {
            try times.map { String(format: "%.3f", $0) }.joined(separator: "\n").write(toFile: latencies, atomically: true, encoding: .utf8)
        }
        say("placed \(times.count)")
        await store.close()
    }
}

struct RegistryLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "registry-load",
        abstract: "Simulate many nodes heartbeating against the configured registry; print heartbeat latency and database CPU per heartbeat.")

    @Option var configDir: String
    @Option var nodes = 1000
    @Option var sessions = 20000
    @Option(help: "Seconds between one simulated node's heartbeats.") var interval: Double = 5
    @Option var seconds: Double = 60
    @Option(help: "The database server's main pid: its CPU time and its children's is read from /proc.") var dbPid: Int32?

    func run() async throws {
        let (config, context) = try loadConfiguration(configDir)
        let store = try PluginCatalog.builtin.makeRegistryStore(config.database, context: context)
        try await store.migrate()
        let started = Date()
        let ids = try await withThrowingTaskGroup(of: Int64.self) { group in
            for index in 0..<nodes {
                group.addTask {
                    try await store.registerNode(NodeRegistration(host: "sim-\(index)", ipv4: "127.1.\(index / 250).\(index % 250 + 1)", port: 8787,
                                                                  status: .online, cpus: 4, version: "sim", configHash: "sim", launcherFingerprint: nil)).id
                }
            }
            return try await group.reduce(into: [Int64]()) { $0.append($1) }.sorted()
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for lane in 0..<16 {
                group.addTask {
                    for index in stride(from: lane, to: sessions, by: 16) {
                        let now = Date()
                        try await store.createSession(SessionRecord(
                            id: Crypto.randomBytes(16).hexString, username: "user\(index % 500)",
                            ownership: SessionOwnership(node: ids[index % ids.count], state: .running, pid: Int32(100_000 + index), port: 20_000 + index % 40_000),
                            createdAt: now, lastActive: now, label: nil))
                    }
                }
            }
            try await group.waitForAll()
        }
        say("set up \(ids.count) nodes and \(sessions) running sessions in \(String(format: "%.1f", Date().timeIntervalSince(started))) s; heartbeating for \(Int(seconds)) s")
        let cpuBefore = dbPid.map(Self.cpuSeconds)
        let clockStart = DispatchTime.now().uptimeNanoseconds
        let end = clockStart + UInt64(seconds * 1e9)
        let step = UInt64(interval * 1e9)
        let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
            for id in ids {
                group.addTask {
                    var mine: [Double] = []
                    var next = clockStart + UInt64.random(in: 0..<step)  // spread over the interval, as real nodes are
                    while next < end {
                        let now = DispatchTime.now().uptimeNanoseconds
                        if next > now { try await Task.sleep(for: .nanoseconds(next - now)) }
                        let before = DispatchTime.now().uptimeNanoseconds
                        _ = try await store.heartbeat(node: id, load: LoadAverage(one: 0.1, five: 0.1, fifteen: 0.1))
                        mine.append(Double(DispatchTime.now().uptimeNanoseconds - before) / 1e6)
                        next += step
                    }
                    return mine
                }
            }
            return try await group.reduce(into: [Double]()) { $0 += $1 }.sorted()
        }
        let cpuAfter = dbPid.map(Self.cpuSeconds)
        await store.close()
        func pick(_ q: Double) -> Double { latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, Int(Double(latencies.count) * q))] }
        say(String(format: "heartbeats %d, latency p50 %.2f ms, p99 %.2f ms, max %.2f ms", latencies.count, pick(0.5), pick(0.99), latencies.last ?? 0))
        if let cpuBefore, let cpuAfter, !latencies.isEmpty {
            let cpu = cpuAfter - cpuBefore
            say(String(format: "database CPU %.2f s in %.0f s = %.3f ms per heartbeat (%.1f%% of one core)",
                       cpu, seconds, cpu * 1000 / Double(latencies.count), cpu * 100 / seconds))
        }
    }

    /// User and system CPU seconds of `pid` and its direct children (a PostgreSQL server's
    /// backends and workers), from /proc.
    static func cpuSeconds(_ pid: Int32) -> Double {
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        var total = 0.0
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] where Int32(entry) != nil {
            guard let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            // After the command: state(0) ppid(1) ... utime(11) stime(12).
            guard fields.count > 12, let ppid = Int32(fields[1]), Int32(entry) == pid || ppid == pid,
                  let user = Double(fields[11]), let system = Double(fields[12]) else { continue }
            total += (user + system) / ticks
        }
        return total
    }
}

struct Cookie: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a sign-in cookie for USER signed with the configured key, and its CSRF token, on two lines (for benchmarks).")

    @Option var configDir: String
    @Option var user: String

    func run() async throws {
        let (config, _) = try loadConfiguration(configDir)
        let key = try SecureCookieKey.load(from: config.secureCookieKeyPath)
        let cookie = SignInCookie.issue(username: user, lifetime: 3600, key: key)
        say(cookie)
        say(SignInCookie.csrfToken(for: cookie, key: key))
    }
}

struct DiagnosticsWrite: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diagnostics",
        abstract: "Record events through the configured diagnostics sink from several threads at once: WRITERS x EVENTS events `w writer=W n=N pad=...`.")

    @Option var configDir: String
    @Option var writers: Int = 4
    @Option var events: Int = 100

    func run() async throws {
        let (config, context) = try loadConfiguration(configDir)
        let lb = config.effectiveLoadBalancer
        guard let factory = try PluginCatalog.builtin.diagnosticsSink(for: lb) else {
            throw ValidationError("diagnostics= is not set in load-balancer")
        }
        let sink = try factory.make(config: lb, context: context)
        await DiagnosticsConformance.recordConcurrently(into: sink, writers: writers, events: events)
        say("recorded \(writers * events)")
    }
}

/// Accepts hop openings as a node under a flood does (`Benchmarks/replay/run.sh`): SECONDS of
/// openings from one user, each a fresh nonce, at the rate the table allows, with the table as it
/// was before issue 34 (a dictionary copied on every insertion past 10,000 entries, under one
/// lock) and as it is (buckets per second). Prints openings per second and CPU seconds per
/// 100,000 openings for each, and the entries kept.
struct ReplayBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "replay-bench")
    @Option var seconds: Double = 5

    /// The table before: a nonce → time dictionary, filtered (a copy) on every insertion once it
    /// holds more than 10,000 entries.
    final class Before: @unchecked Sendable {
        private var seen: [String: Double] = [:]
        private let lock = NSLock()
        func accept(nonce: String, timestamp: Double, now: Double) -> Bool {
            lock.lock()
            defer { lock.unlock() }
            let horizon = now - 2 * InternalRequestSignature.allowedSkew
            if seen.count > 10_000 { seen = seen.filter { $0.value > horizon } }
            guard seen[nonce] == nil else { return false }
            seen[nonce] = max(timestamp, now)
            return true
        }
        var count: Int { lock.lock(); defer { lock.unlock() }; return seen.count }
    }

    func run() async throws {
        func cpu() -> Double {
            var usage = rusage()
            getrusage(RUSAGE_SELF.rawValue, &usage)
            return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
        }
        func measure(_ name: String, _ accept: (String, Double) -> Bool, kept: () -> Int) {
            let started = Date()
            let cpuStart = cpu()
            var accepted = 0
            var n = 0
            while Date().timeIntervalSince(started) < seconds {
                let now = Date().timeIntervalSince1970
                for _ in 0..<100 {
                    if accept("opening-\(n)-\(UInt64.random(in: 0...UInt64.max))", now) { accepted += 1 }
                    n += 1
                }
            }
            let elapsed = Date().timeIntervalSince(started)
            let used = cpu() - cpuStart
            print(String(format: "%-28@ %12.0f openings/s  %8.3f CPU-s per 100k  %8d entries kept", name as NSString,
                         Double(accepted) / elapsed, used / Double(max(accepted, 1)) * 100_000, kept()))
        }
        let before = Before()
        measure("before (copy past 10,000)", { before.accept(nonce: $0, timestamp: $1, now: $1) }, kept: { before.count })
        let after = ReplayGuard(capacity: 10_000_000, perUser: 10_000_000)
        measure("after (buckets per second)", { after.acceptOpening(nonce: $0, timestamp: $1, user: "mallory", now: Date(timeIntervalSince1970: $1)) == .accepted },
                kept: { after.counts.openings })
    }
}

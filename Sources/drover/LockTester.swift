import ArgumentParser
import DroverKernel
import DroverPlugins
import Foundation
import Logging
import UnixSignals

struct LockTester: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "locktester",
        abstract: "Check that file locks work across nodes.",
        discussion: """
            Run it on two nodes against the same shared directory. The first run takes an advisory \
            and a link-based lock and holds them until interrupted; later runs report which lock \
            types the file system supports. With --stress, N local processes contend for one lock \
            and check that no two ever hold it at once.
            """)

    @OptionGroup var options: ConfigOptions
    @Option(help: "The shared directory to test (default: server-shared-storage-path).") var dir: String?
    @Flag(help: "Run the contention test instead.") var stress = false
    @Option(help: "With --stress: contending processes.") var processes = 4
    @Option(help: "With --stress: seconds to run.") var seconds: Double = 10
    @Option(help: "With --stress: linkbased or advisory (default: lock-type in file-locks).") var lockType: String?
    @Flag(help: .hidden) var stressWorker = false

    func validate() throws {
        guard processes >= 1, processes <= 512 else { throw ValidationError("--processes must be from 1 to 512") }
        guard seconds > 0, seconds <= 86_400 else { throw ValidationError("--seconds must be above 0 and at most 86400") }
    }

    func run() async throws {
        let config = try options.load()
        guard let directory = dir ?? config.server.sharedStoragePath else {
            throw CommandFailure("no directory to test: pass --dir DIR or set server-shared-storage-path in rserver.conf", status: 2)
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw CommandFailure("\(directory) is not a directory; create it on the shared storage first", status: 2)
        }
        if stressWorker {
            try runStressWorker(config: config, directory: directory)
        } else if stress {
            try runStress(config: config, directory: directory)
        } else {
            try await runTwoNodeCheck(config: config, directory: directory)
        }
    }

    func provider(_ name: String, _ config: DroverConfiguration) throws -> any LockProvider {
        var locks = config.fileLocks
        locks.lockType = name
        let context = PluginContext(config, key: nil, logger: Logger(label: "locktester"))
        do {
            return try PluginCatalog.builtin.makeLockProvider(locks, context: context)
        } catch {
            throw CommandFailure("\(error)", status: 2)
        }
    }

    // MARK: the seed's two-node check

    func runTwoNodeCheck(config: DroverConfiguration, directory: String) async throws {
        let path = directory + "/drover-locktester"
        let attempts: [(label: String, provider: any LockProvider, path: String)] = [
            ("advisory", try provider("advisory", config), path),
            ("link-based", try provider("linkbased", config), path + ".link"),
        ]
        var held: [(String, any HeldLock)] = []
        var busy: [String] = []
        var failed: [(label: String, reason: String)] = []
        for attempt in attempts {
            do {
                if let lock = try await attempt.provider.tryAcquireOnOwnThread(attempt.path) {
                    held.append((attempt.label, lock))
                    say("* Acquired \(attempt.label) lock")
                } else {
                    busy.append(attempt.label)
                    say("* Unable to acquire \(attempt.label) lock")
                }
            } catch {
                // Not "held elsewhere": an error (no lock daemon, a read-only mount, no
                // permission) says nothing about support, and is reported as what it is.
                failed.append((attempt.label, "\(error)"))
                say("* Error taking the \(attempt.label) lock: \(error)")
            }
        }
        if busy.isEmpty, !held.isEmpty {
            // The first node: it holds whatever it acquired, and says which.
            let names = held.map(\.0)
            let what = names.count == attempts.count ? "both locks" : "the \(names.joined(separator: " and ")) lock"
            await holdUntilSignalled(held.map(\.1), refreshEvery: config.fileLocks.refreshRate) {
                say("Holding \(what); run the locktester on another node now. Press Ctrl+C to release.")
            }
        } else {
            for label in busy {
                say("Your filesystem appears to support \(label) locks.")
            }
            for (label, _) in held {
                say("Your filesystem does not appear to support \(label) locks: this node took it while another held it.")
            }
        }
        for (label, reason) in failed {
            say("Cannot tell whether your filesystem supports \(label) locks: taking one failed (\(reason)).")
        }
        for (_, lock) in held { try? await lock.releaseOnOwnThread() }
        if !failed.isEmpty { throw ExitCode(1) }
    }

    /// Refreshes the locks until SIGINT or SIGTERM.
    /// - Parameters:
    ///   - ready: called once the signals are caught, so no Ctrl+C can come too early.
    func holdUntilSignalled(_ locks: [any HeldLock], refreshEvery seconds: Int, ready: () -> Void) async {
        // Caught through UnixSignals, as droverd catches its signals.
        let signals = await UnixSignalsSequence(trapping: .sigint, .sigterm)
        ready()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await _ in signals { return }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(seconds))
                    for lock in locks { _ = try? await lock.refreshOnOwnThread() }
                }
            }
            await group.next()
            group.cancelAll()
        }
    }

    // MARK: --stress

    struct WorkerReport: Codable {
        var acquisitions: Int
        var violations: Int
        var latenciesMicroseconds: [Int]
    }

    var stressPaths: (lock: String, counter: String, inside: String) {
        let base = (dir ?? "") + "/drover-stress"
        return (base + ".lock", base + ".counter", base + ".inside")
    }

    func runStress(config: DroverConfiguration, directory: String) throws {
        let type = lockType ?? config.fileLocks.lockType
        _ = try provider(type, config)
        let paths = (directory + "/drover-stress.lock", directory + "/drover-stress.counter", directory + "/drover-stress.inside")
        try Data("0".utf8).write(to: URL(fileURLWithPath: paths.1))
        unlink(paths.2)
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var workers: [(Process, Pipe)] = []
        for _ in 0..<processes {
            let process = Process()
            process.executableURL = executable
            process.arguments = ["locktester", "--stress-worker", "--config-dir", config.directory, "--dir", directory,
                                 "--seconds", String(seconds), "--lock-type", type]
            let pipe = Pipe()
            process.standardOutput = pipe
            try process.run()
            workers.append((process, pipe))
        }
        var total = WorkerReport(acquisitions: 0, violations: 0, latenciesMicroseconds: [])
        for (process, pipe) in workers {
            let output = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            guard process.terminationStatus == 0, let report = try? JSONDecoder().decode(WorkerReport.self, from: output) else {
                throw CommandFailure("a stress worker failed (exit \(process.terminationStatus))", status: 1)
            }
            total.acquisitions += report.acquisitions
            total.violations += report.violations
            total.latenciesMicroseconds += report.latenciesMicroseconds
        }
        let counter = Int(String(decoding: FileManager.default.contents(atPath: paths.1) ?? Data(), as: UTF8.self)) ?? -1
        // Every acquisition incremented the counter once; a lost update means two holders overlapped.
        let lostUpdates = max(0, total.acquisitions - counter)
        let violations = total.violations + lostUpdates
        let sorted = total.latenciesMicroseconds.sorted()
        func percentile(_ p: Double) -> String {
            guard !sorted.isEmpty else { return "n/a" }
            let index = min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)
            return String(format: "%.3f ms", Double(sorted[max(0, index)]) / 1000)
        }
        print("Lock type:     \(type)")
        print("Directory:     \(directory)")
        print("Processes:     \(processes)")
        print(String(format: "Duration:      %.1f s", seconds))
        print(String(format: "Acquisitions:  %d (%.1f/s)", total.acquisitions, Double(total.acquisitions) / seconds))
        print("Violations:    \(violations)")
        print("Acquire latency p50: \(percentile(0.5)), p99: \(percentile(0.99))")
        unlink(paths.0)
        unlink(paths.1)
        if violations > 0 { throw ExitCode(1) }
    }

    func runStressWorker(config: DroverConfiguration, directory: String) throws {
        let locks = try provider(lockType ?? config.fileLocks.lockType, config)
        let lockPath = directory + "/drover-stress.lock"
        let counterPath = directory + "/drover-stress.counter"
        let insidePath = directory + "/drover-stress.inside"
        var report = WorkerReport(acquisitions: 0, violations: 0, latenciesMicroseconds: [])
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let started = DispatchTime.now().uptimeNanoseconds
            var lock: (any HeldLock)?
            while lock == nil, Date() < deadline {
                lock = try locks.tryAcquire(lockPath)
                if lock == nil { usleep(UInt32.random(in: 200...2000)) }
            }
            guard let lock else { break }
            report.latenciesMicroseconds.append(Int((DispatchTime.now().uptimeNanoseconds - started) / 1000))
            report.acquisitions += 1
            // The critical section: a marker no one else may hold, and a counter to increment.
            let marker = open(insidePath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            if marker < 0 {
                report.violations += 1
            } else {
                close(marker)
                let value = Int(String(decoding: FileManager.default.contents(atPath: counterPath) ?? Data(), as: UTF8.self)) ?? 0
                try Data(String(value + 1).utf8).write(to: URL(fileURLWithPath: counterPath))
                unlink(insidePath)
            }
            try lock.release()
        }
        FileHandle.standardOutput.write(try JSONEncoder().encode(report))
    }
}

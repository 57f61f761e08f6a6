import ArgumentParser
import DroverCluster
import DroverKernel
import DroverSessionProtocol
import Foundation

/// The node running with this configuration, reached over its own port.
struct LocalNode {
    let config: DroverConfiguration
    let host: String
    let client: NodeClient

    init(_ config: DroverConfiguration) throws {
        self.config = config
        let server = config.server
        host = ["0.0.0.0", "::", ""].contains(server.wwwAddress) ? "127.0.0.1" : server.wwwAddress
        let key = (try? SecureCookieKey.load(from: config.secureCookieKeyPath)) ?? SecureCookieKey(bytes: Crypto.randomBytes(32))
        do {
            // A local call: the certificate names the public host, not this address.
            client = try NodeClient(key: key, protocol: server.sslEnabled ? .httpsNoVerify : .http,
                                    timeoutSeconds: max(config.effectiveLoadBalancer.timeout, 60))
        } catch {
            throw CommandFailure("\(error)", status: 1)
        }
    }

    /// Makes `call` on this machine's node; its refusal is the command's failure, with the
    /// node's status and reason (or what `refused` makes of it).
    func call<Answer>(_ call: TypedCall<Answer>, refused: ((PeerRefusal) -> CommandFailure)? = nil) async throws -> Answer {
        do {
            return try await client.call(call, host: host, port: config.server.wwwPort)
        } catch let refusal as PeerRefusal {
            throw refused?(refusal) ?? CommandFailure("the node answered \(refusal.status): \(refusal.message)", status: 1)
        } catch {
            throw CommandFailure("\(error); is droverd running with \(config.directory)?", status: 1)
        }
    }

    func get(_ path: String) async throws -> NodeClient.Response {
        do {
            return try await client.send(.GET, path, to: host, port: config.server.wwwPort)
        } catch {
            throw CommandFailure("\(error); is droverd running with \(config.directory)?", status: 1)
        }
    }
}

struct SuspendAll: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "suspend-all",
        abstract: "Suspend every session on this node; each resumes, with its state, where the balancer puts it next.")

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let answer = try await LocalNode(try options.load()).call(.suspendAll(by: Operator.name))
        print("Suspended \(answer.suspended) session(s).")
    }
}

struct Drain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Take this node out of placement and move each of its sessions, running, to the node the balancer picks.",
        discussion: """
            Offline mode first (as 'drover offline'), then each session is suspended (its state \
            saved) and at once started on another node, so its user finds it running. Exits 1 if \
            any session could not be moved, naming why; 'drover drain' again retries them. \
            'drover online' takes the node back.
            """)

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let config = try options.load()
        let local = try LocalNode(config)
        let self_ = try thisNode(config)
        let started = ContinuousClock.now
        do {
            _ = try await local.call(.offlineMode(.init(offline: true, by: Operator.name)))
        } catch let failure as CommandFailure {
            throw CommandFailure("cannot put the node in offline mode: \(failure.message)", status: 1)
        }
        let sessions = try await RegistryAccess.using(options) { access in
            try await access.store.sessions(matching: SessionFilter(node: self_, states: [.starting, .running, .suspending]))
        }
        print("Node \(self_) is in offline mode; moving its \(sessions.count) session(s).")
        var movedTo: [Int64: Int] = [:]
        var failures: [(String, String)] = []
        let bar = ProgressBar(total: sessions.count)
        for session in sessions {
            do {
                let moved = try await local.call(.move(.init(id: session.id, by: Operator.name)))
                guard let node = moved.node else { throw CommandFailure("the node answered with the session on no node (\(moved.state))", status: 1) }
                movedTo[node, default: 0] += 1
            } catch {
                failures.append((session.id, "\(error)"))
            }
            bar.advance(failed: failures.count)
        }
        bar.finish()
        let (seconds, attoseconds) = (ContinuousClock.now - started).components
        let took = String(format: "%.1f", Double(seconds) + Double(attoseconds) / 1e18)
        let destinations = movedTo.sorted { $0.key < $1.key }.map { "\($0.value) to node \($0.key)" }.joined(separator: ", ")
        print("Moved \(sessions.count - failures.count) of \(sessions.count) session(s) in \(took) s" + (destinations.isEmpty ? "." : ": \(destinations)."))
        guard failures.isEmpty else {
            for (id, reason) in failures { print("not moved: \(id): \(reason)") }
            throw CommandFailure("\(failures.count) session(s) could not be moved (above); run 'drover drain' again to retry them", status: 1)
        }
    }
}

/// A progress bar on a terminal (redrawn in place); elsewhere, nothing until the summary.
final class ProgressBar {
    let total: Int
    private var done = 0
    private let terminal = isatty(STDOUT_FILENO) == 1

    init(total: Int) {
        self.total = total
        draw(failed: 0)
    }

    func advance(failed: Int) {
        done += 1
        draw(failed: failed)
    }

    func finish() {
        if terminal, total > 0 { print("") }
    }

    private func draw(failed: Int) {
        guard terminal, total > 0 else { return }
        let width = 30
        let filled = done * width / total
        let line = "\r[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] \(done)/\(total)"
            + (failed > 0 ? " (\(failed) failed)" : "")
        FileHandle.standardOutput.write(Data(line.utf8))
    }
}

/// This node's id, from the file droverd writes when it joins.
func thisNode(_ config: DroverConfiguration) throws -> Int64 {
    guard let text = try? String(contentsOfFile: config.nodeIDFile, encoding: .utf8),
          let node = Int64(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
        throw CommandFailure("this node has not joined yet (no \(config.nodeIDFile)); start droverd first", status: 1)
    }
    return node
}

struct ActiveSessions: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "active-sessions",
        abstract: "List the sessions running on this node: pid, user, session id, kind, age, memory and CPU.",
        discussion: "MEMORY is what the session's cgroup counts now, with its kind's memory-limit after the slash; CPU is the CPUs it used over half a second, with its cpu-limit. A dash: not measured (no cgroup).")

    /// A value read from the registry, safe for a terminal: control characters (C0, DEL and
    /// C1, which includes the 8-bit escape introducers) and backslashes escaped.
    static func printable(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar.value {
            case 0x5c: out += "\\\\"
            case 0x0a: out += "\\n"
            case 0x0d: out += "\\r"
            case 0x09: out += "\\t"
            case 0..<0x20, 0x7f, 0x80..<0xa0: out += String(format: "\\x%02x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let config = try options.load()
        let node = try thisNode(config)
        let (sessions, now) = try await RegistryAccess.using(options) { access in
            (try await access.store.sessions(matching: SessionFilter(node: node, states: [.starting, .running, .suspending])), try await access.store.now())
        }
        // Each session's cgroups, from its main process; two CPU readings half a second apart.
        let host = CgroupHost.current()
        let cgroups = sessions.map { session in session.ownership.pid.flatMap { SessionCgroupSet.of(pid: $0, sessionID: session.id, host: host) } }
        let before = cgroups.map { $0?.cpuSeconds() }
        if before.contains(where: { $0 != nil }) { try await Task.sleep(for: .milliseconds(500)) }
        func column(_ text: String, _ width: Int) -> String { text.padding(toLength: max(width, text.count + 1), withPad: " ", startingAt: 0) }
        print(column("PID", 8) + column("USER", 16) + column("SESSION", 34) + column("KIND", 14) + column("AGE", 8) + column("MEMORY", 16) + "CPU")
        for (index, session) in sessions.enumerated() {
            let age = Int(now.timeIntervalSince(session.createdAt))
            let ageText = age >= 3600 ? "\(age / 3600)h\(age % 3600 / 60)m" : age >= 60 ? "\(age / 60)m\(age % 60)s" : "\(age)s"
            let limits = config.kinds[session.kind]?.limits ?? SessionLimits()
            var usage = SessionCgroupSet.Usage()
            var cpus: Double?
            if let set = cgroups[index] {
                usage = set.usage()
                if let first = before[index], let second = usage.cpuSeconds { cpus = max(0, second - first) / 0.5 }
            }
            let report = SessionResourceReport(id: session.id, kind: session.kind, usage: usage, limits: limits, cpus: cpus)
            print(column(session.ownership.pid.map(String.init) ?? "-", 8) + column(session.username, 16) + column(session.id, 34)
                  + column(Self.printable(session.kind), 14) + column(ageText, 8) + column(report.memoryText, 16) + report.cpuText
                  + (session.ownership.state == .running ? "" : " (\(session.ownership.state.rawValue))"))
        }
    }
}

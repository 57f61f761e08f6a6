import DroverTesting
import Foundation
import Synchronization

/// A small, seedable random number generator, so a failing run can be repeated.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// What the user knows of one session.
struct SessionModel: Sendable {
    /// POSTs to `count` sent, whether or not an answer came back: the most the count can be.
    var incrementsSent = 0
    /// The highest count read from the saved state file after a suspend the registry confirmed.
    var highestSaved = 0
    /// Set when the saved state file was seen holding less than it held before.
    var savedWentBack: String?
    var quit = false
    /// A quit was sent but no answer came.
    var quitUnanswered = false
}

/// One signed-out (auth-none) visitor in a task of their own, through random nodes: starts up to ten
/// sessions, increments their counters, suspends and quits some. Failed calls are expected
/// while nodes and the database go down; only what the cluster confirmed is recorded.
final class ChaosUser: Sendable {
    let nodes: [ConfigDirectory]
    let seed: UInt64
    let sessions = Mutex<[String: SessionModel]>([:])
    let stopping = Atomic<Bool>(false)
    let calls = Atomic<Int>(0)
    let failures = Atomic<Int>(0)
    /// WebSocket echoes that came back different (must stay empty).
    let wrongEchoes = Mutex<[String]>([])
    /// Refusals by status (0: no answer, -1: a WebSocket echo that failed), for the summary.
    let refusals = Mutex<[Int: Int]>([:])
    let suspends = Atomic<Int>(0)
    /// What 500 answers said (a 500 is a bug, not a fault the cluster was put through).
    let serverErrors = Mutex<[String]>([])
    let running = Mutex<Task<Void, Never>?>(nil)
    /// The ``NetworkLab`` host the user's calls come from (nil: this machine).
    let networkNamespace: String?
    /// Whether some steps are WebSocket echoes.
    let webSockets: Bool
    /// How long a call may take before it counts as unanswered.
    let timeout: TimeInterval
    /// Every HTTP call that got no answer or a 5xx one: when it was sent and answered, what
    /// it was, its status (0: none) and its `Retry-After`.
    let failureLog = Mutex<[FailedCall]>([])

    struct FailedCall: CustomStringConvertible {
        var sent: Date
        var answered: Date
        var call: String
        var status: Int
        var retryAfter: String?
        var body: String
        var description: String {
            "\(call) → \(status == 0 ? "no answer" : String(status)) retry-after=\(retryAfter ?? "-") \(body.prefix(160))"
        }
    }

    init(nodes: [ConfigDirectory], seed: UInt64, networkNamespace: String? = nil, webSockets: Bool = true, timeout: TimeInterval = 10) {
        self.nodes = nodes
        self.seed = seed
        self.networkNamespace = networkNamespace
        self.webSockets = webSockets
        self.timeout = timeout
    }

    var summary: String {
        let all = sessions.withLock { $0 }
        return "\(all.count) sessions (\(all.values.filter(\.quit).count) quit), \(calls.load(ordering: .relaxed)) calls, "
            + "\(failures.load(ordering: .relaxed)) failed or refused \(refusals.withLock { $0 }.sorted { $0.key < $1.key }.map { "\($0.key == 0 ? "none" : $0.key == -1 ? "websocket" : String($0.key)): \($0.value)" }), "
            + "\(suspends.load(ordering: .relaxed)) confirmed suspends, "
            + "\(all.values.map(\.incrementsSent).reduce(0, +)) increments sent"
            + serverErrors.withLock { $0.isEmpty ? "" : "; 500s: " + $0.joined(separator: " | ") }
    }

    func start() {
        let task = Task { [self] in
            var random = SplitMix64(seed: seed)
            while !stopping.load(ordering: .relaxed) {
                await step(&random)
            }
        }
        running.withLock { $0 = task }
    }

    /// Stops after the current call; returns what the user knows.
    func stop() async -> [String: SessionModel] {
        stopping.store(true, ordering: .relaxed)
        await running.withLock { $0 }?.value
        return sessions.withLock { $0 }
    }

    private func call(_ method: String, _ path: String, _ random: inout SplitMix64) async -> RawHTTPClient.Response? {
        let node = nodes[Int.random(in: 0..<nodes.count, using: &random)]
        calls.add(1, ordering: .relaxed)
        let sent = Date()
        let response = try? await RawHTTPClient.request(method, host: node.address, port: node.port, path: path, timeout: timeout,
                                                        networkNamespace: networkNamespace)
        if response.map({ $0.status >= 500 }) ?? true {
            failureLog.withLock {
                $0.append(FailedCall(sent: sent, answered: Date(), call: "\(method) \(path) via \(node.address)", status: response?.status ?? 0,
                                     retryAfter: response?.header("Retry-After"), body: response?.body ?? ""))
            }
        }
        if response.map({ $0.status >= 300 }) ?? true {
            failures.add(1, ordering: .relaxed)
            refusals.withLock { $0[response?.status ?? 0, default: 0] += 1 }
        }
        if let response, response.status == 500 {
            serverErrors.withLock { $0.append("\(method) \(path): \(response.body.prefix(300))") }
        }
        return response
    }

    private func step(_ random: inout SplitMix64) async {
        let live = sessions.withLock { $0.filter { !$0.value.quit }.keys.sorted() }
        let roll = Int.random(in: 0..<100, using: &random)
        if live.count < 4 || (roll < 8 && sessions.withLock { $0.count } < 10) {
            if let created = await call("POST", "/api/sessions", &random), created.status == 201,
               let id = (try? JSONSerialization.jsonObject(with: Data(created.body.utf8)) as? [String: Any])?["id"] as? String {
                sessions.withLock { $0[id] = SessionModel() }
            }
            return
        }
        let id = live[Int.random(in: 0..<live.count, using: &random)]
        if roll < 74 {
            sessions.withLock { $0[id]?.incrementsSent += 1 }
            _ = await call("POST", "/s/\(id)/count", &random)
        } else if roll < 80, webSockets {
            // A WebSocket echo through a random node: the tunnel must carry it, or fail cleanly.
            let node = nodes[Int.random(in: 0..<nodes.count, using: &random)]
            let message = "echo \(Int.random(in: 0..<1_000_000, using: &random))"
            calls.add(1, ordering: .relaxed)
            let echoed = try? await RawWebSocket.echo(host: node.address, port: node.port, path: "/s/\(id)/echo", message: message, timeout: 10,
                                                        networkNamespace: networkNamespace)
            if echoed == nil {
                failures.add(1, ordering: .relaxed)
                refusals.withLock { $0[-1, default: 0] += 1 }
            } else if echoed != message {
                wrongEchoes.withLock { $0.append("\(message) came back as \(echoed!)") }
            }
        } else if roll < 97 {
            guard await call("POST", "/api/sessions/\(id)/suspend", &random)?.status == 202 else { return }
            // Confirmed once the registry says suspended; then the state file holds the count.
            let deadline = Date().addingTimeInterval(8)
            while Date() < deadline, !stopping.load(ordering: .relaxed) {
                if let listed = await call("GET", "/api/sessions", &random), listed.status == 200,
                   let rows = try? JSONSerialization.jsonObject(with: Data(listed.body.utf8)) as? [[String: Any]],
                   rows.first(where: { $0["id"] as? String == id })?["state"] as? String == "suspended" {
                    suspends.add(1, ordering: .relaxed)
                    let saved = DemoSessionState.savedCount(id) ?? 0
                    sessions.withLock {
                        if saved < $0[id]!.highestSaved { $0[id]!.savedWentBack = "\($0[id]!.highestSaved) then \(saved)" }
                        $0[id]!.highestSaved = max($0[id]!.highestSaved, saved)
                    }
                    return
                }
                try? await Task.sleep(for: .milliseconds(200))
            }
        } else {
            let answer = await call("DELETE", "/api/sessions/\(id)", &random)
            if answer?.status == 204 {
                sessions.withLock { $0[id]?.quit = true }
            } else if answer == nil || answer!.status >= 500 {
                sessions.withLock { $0[id]?.quitUnanswered = true }
            }
        }
    }
}

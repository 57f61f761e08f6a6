import DroverKernel
public import Foundation

/// A program's own view of its activity, for a kind whose `activity` is not `client` (README,
/// "Session kinds"): what the idle timeout reads besides the client's requests.
public struct ProgramActivity: Sendable, Equatable {
    /// Work is running now (a kernel executing code): the session is not idle, whatever the
    /// time of its last activity.
    public var busy: Bool
    /// The latest activity the program reports (a kernel's or a terminal's), if any.
    public var lastActivity: Date?

    public init(busy: Bool, lastActivity: Date?) {
        self.busy = busy
        self.lastActivity = lastActivity
    }

    /// Jupyter Server's `api/kernels` and `api/terminals` answers, as JupyterHub's idle culler
    /// reads them: each kernel's `execution_state` (`busy` while it runs code, `starting`) and
    /// `last_activity` (its last message: an execution, its output, a completion), each
    /// terminal's `last_activity`. Not `api/status`'s `last_activity`: every API request moves
    /// it, the open Lab's own polling included. nil when `kernels` is not such a list.
    public static func jupyter(kernels: Data, terminals: Data?) -> ProgramActivity? {
        guard let kernelList = try? JSONDecoder().decode([JupyterActivity].self, from: kernels) else { return nil }
        let terminalList = terminals.flatMap { try? JSONDecoder().decode([JupyterActivity].self, from: $0) } ?? []
        let busy = kernelList.contains { ["busy", "starting"].contains($0.executionState ?? "") }
        // Jupyter's times: ISO 8601 in UTC, with or without fractions of a second.
        let withFractions = ISO8601DateFormatter()
        withFractions.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let plain = ISO8601DateFormatter()
        let times = (kernelList + terminalList).compactMap { $0.lastActivity.flatMap { withFractions.date(from: $0) ?? plain.date(from: $0) } }
        return ProgramActivity(busy: busy, lastActivity: times.max())
    }

    /// The fields read of a kernel or a terminal in Jupyter's answers (the others are ignored).
    struct JupyterActivity: Decodable {
        var executionState: String?
        var lastActivity: String?

        enum CodingKeys: String, CodingKey {
            case executionState = "execution_state"
            case lastActivity = "last_activity"
        }
    }

    /// Asks session `endpoint`'s program (a kind with `activity=jupyter`) under `base` (`/s/<id>/`,
    /// or `/` for `base-path=strip`). nil when it does not answer as Jupyter does.
    /// Both requests together take at most ``answerSeconds``: a program that trickles its answer
    /// is taken as one that did not answer.
    static func readJupyter(_ endpoint: SessionEndpoint, base: String) async -> ProgramActivity? {
        await withCheckedContinuation { continuation in
            Thread {
                let deadline = ContinuousClock.now + .seconds(answerSeconds)
                guard let kernels = SessionProcess.fetch(endpoint, uri: base + "api/kernels", until: deadline), kernels.status == 200 else {
                    continuation.resume(returning: nil)
                    return
                }
                let terminals = SessionProcess.fetch(endpoint, uri: base + "api/terminals", until: deadline).flatMap { $0.status == 200 ? $0.body : nil }
                continuation.resume(returning: jupyter(kernels: kernels.body, terminals: terminals))
            }.start()
        }
    }
}

extension ProgramActivity {
    /// Seconds a program has to answer both of an activity poll's requests.
    static let answerSeconds = 3
}

extension SessionProcess {
    /// One `GET` to a session's program over a verified connection (``SessionConnector``), as
    /// HTTP/1.0 so that the answer is not chunked; its status and body (at most 1 MiB), or nil
    /// when it is not whole by `deadline` (each wait for bytes is bounded by what is left).
    /// Blocks: call it off the cooperative pool.
    static func fetch(_ endpoint: SessionEndpoint, uri: String, until deadline: ContinuousClock.Instant) -> (status: Int, body: Data)? {
        guard let fd = sendGET(endpoint, uri: uri, version: "HTTP/1.0", headers: "Accept: application/json\r\n", waitSeconds: 1) else { return nil }
        defer { close(fd) }
        var answer = Data()
        var chunk = [UInt8](repeating: 0, count: 16_384)
        while answer.count < 1 << 20 {
            let left = deadline - ContinuousClock.now
            guard left > .zero else { return nil }
            var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let milliseconds = Int32(clamping: left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1)
            let polled = poll(&ready, 1, milliseconds)
            if polled < 0, errno == EINTR { continue }
            guard polled > 0 else { return nil }
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if count < 0, errno == EINTR || errno == EAGAIN { continue }
            guard count > 0 else { break }
            answer.append(contentsOf: chunk[0..<count])
        }
        guard let end = answer.range(of: Data("\r\n\r\n".utf8)) else { return nil }
        let statusLine = String(decoding: answer[..<end.lowerBound].prefix { $0 != UInt8(ascii: "\r") }, as: UTF8.self)
        let fields = statusLine.split(separator: " ")
        guard fields.count >= 2, fields[0].hasPrefix("HTTP/"), let status = Int(fields[1]) else { return nil }
        return (status, Data(answer[end.upperBound...]))
    }
}

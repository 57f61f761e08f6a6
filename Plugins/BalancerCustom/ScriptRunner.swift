import DroverKernel
import Foundation

/// Runs the balancer script with a deadline and collects its standard output, on a thread of
/// its own (never the cooperative pool).
///
/// The script gets a clean environment (`PATH`, `LANG` and what the strategy passes, nothing of
/// droverd's: no secrets, no `LD_PRELOAD`), leads a process group of its own, and is killed with
/// its whole group at the timeout. Its run ends when it exits: whatever it started that is still
/// running in its group is killed then, so a child that kept the output pipe open (`sleep 60 &`)
/// cannot hold placement up.
enum ScriptRunner {
    enum Outcome: Sendable, Equatable {
        case output(String)
        case failed(String)
    }

    static let maximumOutput = 4096
    static let cleanEnvironment = ["PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"]

    static func run(_ path: String, environment: [String: String], timeoutSeconds: Int) async -> Outcome {
        guard FileManager.default.isExecutableFile(atPath: path) else {
            return .failed(FileManager.default.fileExists(atPath: path) ? "it is not executable (chmod +x \(path))" : "it does not exist")
        }
        let variables = cleanEnvironment.merging(environment) { $1 }.map { "\($0.key)=\($0.value)" }.sorted()
        return await withCheckedContinuation { continuation in
            let thread = Thread {
                continuation.resume(returning: runBlocking(path, environment: variables, timeoutSeconds: timeoutSeconds))
            }
            thread.name = "drover-balancer-script"
            thread.start()
        }
    }

    private static func runBlocking(_ path: String, environment: [String], timeoutSeconds: Int) -> Outcome {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { return .failed("it could not be started (no pipe: \(String(cString: strerror(errno))))") }
        let (readEnd, writeEnd) = (fds[0], fds[1])
        defer { close(readEnd) }
        var pid: Int32 = 0
        var started = false
        for attempt in 0..<3 where !started {
            do {
                pid = try Spawn.start([path], environment: environment, descriptors: [(0, .null), (1, .inherited(writeEnd)), (2, .null)],
                                      newProcessGroup: true)
                started = true
            } catch where error.errno == ETXTBSY && attempt < 2 {
                // The script is being rewritten (or was just written and is still open
                // somewhere): give the writer a moment.
                usleep(50_000)
            } catch {
                close(writeEnd)
                return .failed("it could not be started (\(error))")
            }
        }
        close(writeEnd)
        let deadline = Date().addingTimeInterval(Double(timeoutSeconds))
        var output: [UInt8] = []
        var status: Int32 = 0
        var exited = false
        var timedOut = false
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !exited {
            if waitpid(pid, &status, WNOHANG) == pid {
                exited = true
                break
            }
            let left = deadline.timeIntervalSinceNow
            if left <= 0 {
                timedOut = true
                break
            }
            var poller = pollfd(fd: readEnd, events: Int16(POLLIN), revents: 0)
            if poll(&poller, 1, Int32(min(left, 0.05) * 1000) + 1) > 0 {
                let count = read(readEnd, &buffer, buffer.count)
                if count > 0, output.count <= maximumOutput { output += buffer[0..<count] }
                if count == 0 { usleep(1_000) }  // EOF: the script is exiting; waitpid says when
            }
        }
        // The script's group goes with it: at the timeout the script too, else what it left.
        kill(-pid, SIGKILL)
        if !exited { waitpid(pid, &status, 0) }
        // What is already in the pipe, without waiting for writers that are now dead.
        var poller = pollfd(fd: readEnd, events: Int16(POLLIN), revents: 0)
        while output.count <= maximumOutput, poll(&poller, 1, 0) > 0, (poller.revents & Int16(POLLIN)) != 0 {
            let count = read(readEnd, &buffer, buffer.count)
            guard count > 0 else { break }
            output += buffer[0..<count]
        }
        if timedOut { return .failed("it ran past the \(timeoutSeconds) s timeout and was killed") }
        if (status & 0x7f) != 0 { return .failed("it died of signal \(status & 0x7f)") }
        let code = (status >> 8) & 0xff
        if code != 0 { return .failed("it exited with status \(code)") }
        if output.count > maximumOutput { return .failed("it printed more than \(maximumOutput) bytes") }
        return .output(String(decoding: output, as: UTF8.self))
    }
}

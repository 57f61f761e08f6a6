import Foundation
import Synchronization

/// Runs an executable with a deadline and collects its standard output, without blocking the
/// cooperative thread pool (Foundation waits on its own thread).
enum ScriptRunner {
    enum Outcome: Sendable, Equatable {
        case output(String)
        case failed(String)
    }

    static let maximumOutput = 4096

    static func run(_ path: String, environment: [String: String], timeoutSeconds: Int) async -> Outcome {
        guard FileManager.default.isExecutableFile(atPath: path) else {
            return .failed(FileManager.default.fileExists(atPath: path) ? "it is not executable (chmod +x \(path))" : "it does not exist")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        let reader = output.fileHandleForReading
        let finished = Mutex(false)
        return await withCheckedContinuation { (continuation: CheckedContinuation<Outcome, Never>) in
            process.terminationHandler = { exited in
                finished.withLock { $0 = true }
                let data = reader.readDataToEndOfFile()
                if exited.terminationReason == .uncaughtSignal {
                    continuation.resume(returning: .failed(exited.terminationStatus == SIGKILL
                        ? "it ran past the \(timeoutSeconds) s timeout and was killed" : "it died of signal \(exited.terminationStatus)"))
                } else if exited.terminationStatus != 0 {
                    continuation.resume(returning: .failed("it exited with status \(exited.terminationStatus)"))
                } else if data.count > maximumOutput {
                    continuation.resume(returning: .failed("it printed more than \(maximumOutput) bytes"))
                } else {
                    continuation.resume(returning: .output(String(decoding: data, as: UTF8.self)))
                }
            }
            var started = false
            for attempt in 0..<3 where !started {
                do {
                    try process.run()
                    started = true
                } catch let error as NSError where error.domain == NSPOSIXErrorDomain && error.code == Int(ETXTBSY) && attempt < 2 {
                    // The script is being rewritten (or was just written and is still open
                    // somewhere): give the writer a moment.
                    usleep(50_000)
                } catch {
                    process.terminationHandler = nil
                    continuation.resume(returning: .failed("it could not be started (\(error.localizedDescription))"))
                    return
                }
            }
            let pid = process.processIdentifier
            DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(timeoutSeconds)) {
                // Only a script still running: a finished one's pid may belong to someone else now.
                finished.withLock { done in
                    if !done { kill(pid, SIGKILL) }
                }
            }
        }
    }
}

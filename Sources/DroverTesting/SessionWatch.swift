import Foundation
import Synchronization

/// Watches, from its start until ``stop()``, that no session id ever has two processes (the
/// chaos, failover and rolling-upgrade tests): every 100 ms it reads the running sessions.
public final class DoubleWatcher: Sendable {
    private let seen = Mutex<Set<String>>([])
    private let task = Mutex<Task<Void, Never>?>(nil)

    public init() {
        let watching = Task { [self] in
            while !Task.isCancelled {
                let running = SystemUsers.runningSessionIDs()
                let twice = Dictionary(grouping: running, by: { $0 }).filter { $0.value.count > 1 }.keys
                if !twice.isEmpty { seen.withLock { $0.formUnion(twice) } }
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
        task.withLock { $0 = watching }
    }

    /// Stops watching; the session ids seen running twice at once (judge only a test's own:
    /// another test shows on purpose that the check can fail).
    public func stop() -> Set<String> {
        task.withLock { $0 }?.cancel()
        return seen.withLock { $0 }
    }

    deinit { task.withLock { $0 }?.cancel() }
}

/// The demo session's saved state, in the home of the user droverd's sessions run as with
/// `auth-none` (the test's own).
public enum DemoSessionState {
    public static func directory(_ id: String) -> String {
        let home = SystemUsers.account(SystemUsers.currentName)?.home ?? NSHomeDirectory()
        return home + "/.local/share/drover/sessions/" + id
    }

    /// The count the session saved last, nil when it saved none (or its state was removed).
    public static func savedCount(_ id: String) -> Int? {
        (try? String(contentsOfFile: directory(id) + "/count", encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    public static func remove(_ id: String) { try? FileManager.default.removeItem(atPath: directory(id)) }
}

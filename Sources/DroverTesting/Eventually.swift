public import Foundation

/// Polls `check` every `interval` until it holds; throws after `timeout` seconds, naming `what`
/// and the last error `check` threw (errors count as "not yet"). The test kit's one poll loop.
/// - Parameter stop: asked before each poll: a reason to give up at once (the process being
///   waited for exited), or nil to go on.
public func eventually(_ what: String, timeout: TimeInterval = 20, every interval: Duration = .milliseconds(100),
                       stop: () -> String? = { nil }, _ check: () async throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    var lastError: (any Error)?
    while true {
        if let reason = stop() { throw TestFailure("\(reason) while waiting for \(what)") }
        do {
            if try await check() { return }
        } catch {
            lastError = error
        }
        guard Date() < deadline else {
            throw TestFailure("timed out waiting for \(what)" + (lastError.map { " (last error: \($0))" } ?? ""))
        }
        try await Task.sleep(for: interval)
    }
}

/// Polls `value` every `interval` until it gives something, and returns it; throws after
/// `timeout` seconds as ``eventually(_:timeout:every:stop:_:)`` does (errors count as "not yet").
public func eventuallyValue<T>(_ what: String, timeout: TimeInterval = 60, every interval: Duration = .milliseconds(250),
                               _ value: () async throws -> T?) async throws -> T {
    var found: T?
    try await eventually(what, timeout: timeout, every: interval) {
        found = try await value()
        return found != nil
    }
    return found!
}

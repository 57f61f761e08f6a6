import Foundation

/// Runs blocking work (file-system calls on shared storage, socket I/O, `waitpid`) on a thread
/// of its own and awaits its result, so the awaiting task gives its cooperative thread back
/// meanwhile: a call stuck in the kernel (a dead NFS mount) holds only that thread.
public func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Swift.Result(catching: body)) }.start()
    }
}

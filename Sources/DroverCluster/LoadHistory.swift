import DroverKernel
import Synchronization

/// The last loads of every node as this node read them from the registry (twice per heartbeat
/// interval), for the admin dashboard's charts. Kept in memory only, a few minutes' worth.
public final class LoadHistory: Sendable {
    /// Samples kept per node.
    public static let capacity = 120
    private let samples = Mutex<[Int64: [Double]]>([:])

    public init() {}

    /// Records each node's one-minute load per CPU; forgets nodes no longer listed.
    func record(_ nodes: [NodeRecord]) {
        samples.withLock { samples in
            var next: [Int64: [Double]] = [:]
            for node in nodes {
                var series = samples[node.id] ?? []
                series.append(node.load.one)
                if series.count > Self.capacity { series.removeFirst(series.count - Self.capacity) }
                next[node.id] = series
            }
            samples = next
        }
    }

    /// A node's loads, oldest first.
    public func samples(of node: Int64) -> [Double] {
        samples.withLock { $0[node] ?? [] }
    }
}

public import DroverKernel
public import DroverSessionProtocol
import Foundation
import Synchronization

/// What one session of this node uses now and may use (its kind's limits), read from its
/// cgroups: the admin dashboard's, `drover active-sessions`' and the metrics' source.
public struct SessionResourceReport: Codable, Sendable, Equatable {
    public var id: String
    public var kind: String
    public var memoryBytes: UInt64?
    public var memoryLimitBytes: UInt64?
    /// CPU seconds since it started.
    public var cpuSeconds: Double?
    /// Its use of the CPU lately, in CPUs (1: one CPU fully), between two readings.
    public var cpus: Double?
    public var cpuLimit: Double?

    public init(id: String, kind: String, usage: SessionCgroupSet.Usage, limits: SessionLimits, cpus: Double?) {
        self.id = id
        self.kind = kind
        memoryBytes = usage.memoryBytes
        memoryLimitBytes = limits.memoryBytes
        cpuSeconds = usage.cpuSeconds
        self.cpus = cpus
        cpuLimit = limits.cpus
    }

    /// `412M / 512M`, `412M`, `– / 512M` (not measured), or `–`.
    public var memoryText: String {
        guard let memoryBytes else { return memoryLimitBytes.map { "– / " + SessionLimits.formatBytes($0) } ?? "–" }
        return SessionLimits.formatBytes(memoryBytes) + (memoryLimitBytes.map { " / " + SessionLimits.formatBytes($0) } ?? "")
    }

    /// `0.25 / 1 CPU`, `0.25 CPU`, or `–`.
    public var cpuText: String {
        guard let cpus else { return cpuLimit.map { "– / \(SessionLimits.formatCPUs($0)) CPU" } ?? "–" }
        return String(format: "%.2f", cpus) + (cpuLimit.map { " / " + SessionLimits.formatCPUs($0) } ?? "") + " CPU"
    }
}

/// The last CPU reading of each session, so that a use over time can be told from two.
final class CPUReadings: Sendable {
    private let last = Mutex<[String: (at: ContinuousClock.Instant, seconds: Double, cpus: Double?)]>([:])

    /// CPUs used since the previous reading at least `minimum` ago (the previous rate when the
    /// reading is newer than that), nil for a first reading.
    func cpus(_ id: String, seconds: Double, now: ContinuousClock.Instant = .now, minimum: Duration = .milliseconds(500)) -> Double? {
        last.withLock { last in
            guard let previous = last[id] else {
                last[id] = (now, seconds, nil)
                return nil
            }
            let elapsed = now - previous.at
            guard elapsed >= minimum else { return previous.cpus }
            let interval = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            let cpus = max(0, seconds - previous.seconds) / interval
            last[id] = (now, seconds, cpus)
            return cpus
        }
    }

    /// Keeps only the sessions in `ids`.
    func keep(_ ids: Set<String>) {
        last.withLock { $0 = $0.filter { ids.contains($0.key) } }
    }
}

extension SessionManager {
    /// Every running session of this node with its use and limits, read now.
    public func resourceReports() -> [SessionResourceReport] {
        let kinds = runtime.configuration.kinds
        var reports: [SessionResourceReport] = []
        var ids: Set<String> = []
        for id in supervisor.ids {
            guard let session = supervisor.session(id), !session.state.isOver, let cgroups = session.cgroups else { continue }
            ids.insert(id)
            let usage = cgroups.usage()
            let cpus = usage.cpuSeconds.flatMap { cpuReadings.cpus(id, seconds: $0) }
            reports.append(SessionResourceReport(id: id, kind: session.kind, usage: usage, limits: kinds[session.kind]?.limits ?? SessionLimits(), cpus: cpus))
        }
        cpuReadings.keep(ids)
        return reports.sorted { $0.id < $1.id }
    }

    /// Every running session of the cluster with its use: this node's read here, the others'
    /// asked of their nodes (at once; one that does not answer within two seconds is left out).
    public func clusterResourceReports(nodes: [NodeRecord]) async -> [String: SessionResourceReport] {
        var all: [String: SessionResourceReport] = [:]
        for report in resourceReports() { all[report.id] = report }
        let client = runtime.client.withTimeout(2)
        let others = nodes.filter { $0.id != runtime.nodeID && ($0.status == .online || $0.status == .offlineMode) }
        await withTaskGroup(of: [SessionResourceReport].self) { group in
            for node in others {
                group.addTask { (try? await client.call(TypedCall.resources, on: node)) ?? [] }
            }
            for await reports in group {
                for report in reports { all[report.id] = report }
            }
        }
        return all
    }
}

import Foundation

/// The memory and CPU one session may take, set on its cgroup (a kind's `memory-limit` and
/// `cpu-limit`; README, "Session kinds").
public struct SessionLimits: Codable, Sendable, Equatable {
    /// Bytes of memory (and swap: none beyond it) for every process of the session together.
    public var memoryBytes: UInt64?
    /// CPUs' worth of time per period (0.5: half of one CPU; 2: two CPUs).
    public var cpus: Double?

    public init(memoryBytes: UInt64? = nil, cpus: Double? = nil) {
        self.memoryBytes = memoryBytes
        self.cpus = cpus
    }

    public var isEmpty: Bool { memoryBytes == nil && cpus == nil }

    /// The controllers these limits need.
    public var controllers: [CgroupController] {
        (memoryBytes != nil ? [.memory] : []) + (cpus != nil ? [.cpu] : [])
    }

    public static let minimumMemory: UInt64 = 32 << 20
    /// The CPU controller's period: a tenth of a second, the kernel's default.
    public static let cpuPeriodMicroseconds = 100_000

    /// `cpus` as a quota of microseconds per ``cpuPeriodMicroseconds``.
    public var cpuQuotaMicroseconds: Int? { cpus.map { max(1000, Int(($0 * Double(Self.cpuPeriodMicroseconds)).rounded())) } }

    /// `512M`, `4G`, `1.5G`, `1048576`: K, M, G and T are powers of 1024.
    public static func parseBytes(_ text: String) -> UInt64? {
        var number = text
        var scale: Double = 1
        if let last = text.last, let power = ["K": 1.0, "M": 2, "G": 3, "T": 4][String(last).uppercased()] {
            number = String(text.dropLast())
            scale = pow(1024, power)
        }
        guard !number.isEmpty, number.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }), let value = Double(number),
              value.isFinite, value * scale < 4e18 else { return nil }
        return UInt64((value * scale).rounded())
    }

    /// `512M`, `1.5G`: the shortest exact form, for pages and listings.
    public static func formatBytes(_ bytes: UInt64) -> String {
        for (suffix, power) in [("T", 4.0), ("G", 3), ("M", 2), ("K", 1)] {
            let unit = pow(1024, power)
            if Double(bytes) >= unit {
                let value = Double(bytes) / unit
                return (value == value.rounded() ? String(Int(value)) : String(format: "%.1f", value)) + suffix
            }
        }
        return "\(bytes)"
    }

    /// `0.5`, `2`.
    public static func formatCPUs(_ cpus: Double) -> String { String(format: "%g", cpus) }

    /// `memory 4G, 2 CPUs`, or `none`.
    public var summary: String {
        var parts: [String] = []
        if let memoryBytes { parts.append("memory \(Self.formatBytes(memoryBytes))") }
        if let cpus { parts.append("\(Self.formatCPUs(cpus)) CPU\(cpus == 1 ? "" : "s")") }
        return parts.isEmpty ? "none" : parts.joined(separator: ", ")
    }
}

/// The resource controllers a session's limits use.
public enum CgroupController: String, Sendable, CaseIterable {
    case memory, cpu
}

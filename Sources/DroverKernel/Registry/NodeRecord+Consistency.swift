extension Array where Element == NodeRecord {
    /// Nodes whose configuration hash, or launcher-key fingerprint, differs from the value most
    /// nodes share (nodes being deleted do not vote). With no majority (a tie), nobody is flagged.
    public func consistencyOutliers() -> (configuration: Set<Int64>, launcher: Set<Int64>) {
        let voters = filter { $0.status != .deleting }
        func outliers(_ value: (NodeRecord) -> String) -> Set<Int64> {
            let counts = Dictionary(grouping: voters, by: value).mapValues(\.count)
            let sorted = counts.sorted { $0.value > $1.value }
            guard let top = sorted.first, sorted.count > 1, top.value > sorted[1].value else { return [] }
            return Set(voters.filter { value($0) != top.key }.map(\.id))
        }
        return (outliers { $0.configHash }, outliers { $0.launcherFingerprint ?? "" })
    }

    /// The configuration hash most nodes share, if there is one.
    public var majorityConfigHash: String? {
        let counts = Dictionary(grouping: filter { $0.status != .deleting }, by: \.configHash).mapValues(\.count).sorted { $0.value > $1.value }
        guard let top = counts.first, counts.count == 1 || top.value > counts[1].value else { return nil }
        return top.key
    }
}

import ArgumentParser
import DroverKernel
import Foundation

struct ListNodes: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list-nodes",
        abstract: "List the cluster and its nodes.",
        discussion: "Reads the registry directly, so it works whether or not a node runs on this machine. Last Seen is in local time.")

    @OptionGroup var options: ConfigOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let configuration = try options.load()
        guard configuration.isClustered else {
            let path = configuration.directory + "/" + LoadBalancerConfiguration.fileName
            print(json ? #"{"loadBalancing":false,"nodes":[]}"#
                       : "Load balancing is off: \(path) does not exist, so this node runs alone. Create it (it may be empty) to join a cluster.")
            return
        }
        let (cluster, read, interval) = try await RegistryAccess.using(options) { access in
            (try await access.store.cluster(), try await access.store.nodesWithClock(), access.configuration.effectiveLoadBalancer.heartbeatInterval)
        }
        let (nodes, now) = (read.nodes, read.now)
        print(json ? NodeListing.json(cluster: cluster, nodes: nodes, now: now, heartbeatInterval: interval)
                   : NodeListing.table(cluster: cluster, nodes: nodes, now: now, heartbeatInterval: interval, timeZone: .current),
              terminator: "")
    }
}

/// The `list-nodes` formats.
enum NodeListing {
    /// The seed's layout: a Cluster section with the protocol, then one row per node.
    static func table(cluster: ClusterRecord?, nodes: [NodeRecord], now: Date, heartbeatInterval: Int, timeZone: TimeZone) -> String {
        var out = "Cluster\n-------\nProtocol\n"
        out += (cluster?.protocol.displayName ?? "(not defined: the next node to start defines it)") + "\n\nNodes\n-----\n"
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = timeZone
        formatter.dateFormat = "yyyy-MMM-dd HH:mm:ss"
        // The seed's columns, then each node's release and protocol (a rolling upgrade mixes two).
        let headers = ["ID", "Host", "IPv4", "Port", "Status", "Last Seen", "Version"]
        let minimums = [2, 13, 13, 4, NodeStatus.allCases.map(\.rawValue.count).max() ?? 0, 0, 0]
        let rows = nodes.map { node in
            [String(node.id), node.host, node.ipv4 ?? "", String(node.port),
             node.displayStatus(now: now, heartbeatInterval: heartbeatInterval), formatter.string(from: node.lastSeen),
             node.versionLabel]
        }
        let widths = headers.indices.map { column in
            ([headers[column].count, minimums[column]] + rows.map { $0[column].count }).max()! + 2
        }
        for row in [headers] + rows {
            let padded = row.indices.map { column in
                column == row.count - 1 ? row[column] : row[column].padding(toLength: widths[column], withPad: " ", startingAt: 0)
            }
            out += padded.joined() + "\n"
        }
        let outliers = nodes.consistencyOutliers()
        for node in nodes where outliers.configuration.contains(node.id) {
            out += "\nWarning: node \(node.id) (\(node.host):\(node.port)) has a configuration that differs from most nodes'; "
                + "keep the configuration directory identical on every node (only www-host-name, www-address and www-port may differ)."
        }
        for node in nodes where outliers.launcher.contains(node.id) {
            out += "\nWarning: node \(node.id) (\(node.host):\(node.port)) has launcher.pub/launcher.pem that differ from most nodes'; "
                + "copy them from another node."
        }
        if !outliers.configuration.isEmpty || !outliers.launcher.isEmpty { out += "\n" }
        return out
    }

    static func json(cluster: ClusterRecord?, nodes: [NodeRecord], now: Date, heartbeatInterval: Int) -> String {
        func iso(_ date: Date) -> String { date.formatted(.iso8601) }
        let outliers = nodes.consistencyOutliers()
        let listing = NodeListingJSON(
            cluster: cluster.map { .init(protocol: $0.protocol.rawValue, definedAt: iso($0.definedAt), definedByNode: $0.definedByNode) },
            nodes: nodes.map { node in
                .init(id: node.id, host: node.host, ipv4: node.ipv4, port: node.port,
                      status: node.displayStatus(now: now, heartbeatInterval: heartbeatInterval), lastSeen: iso(node.lastSeen),
                      load: [node.load.one, node.load.five, node.load.fifteen], cpus: node.cpus, startedAt: iso(node.startedAt),
                      version: node.version, protocolVersion: node.protocolVersion, configHash: node.configHash, launcherFingerprint: node.launcherFingerprint,
                      configurationDiffers: outliers.configuration.contains(node.id), launcherDiffers: outliers.launcher.contains(node.id))
            })
        return CommandOutput.json(listing) + "\n"
    }
}

/// `drover list-nodes --json`: every key present, `null` where there is no value.
struct NodeListingJSON: Encodable {
    struct Cluster: Encodable {
        var `protocol`: String
        var definedAt: String
        var definedByNode: Int64?

        enum CodingKeys: String, CodingKey { case `protocol`, definedAt = "defined_at", definedByNode = "defined_by_node" }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(`protocol`, forKey: .protocol)
            try container.encode(definedAt, forKey: .definedAt)
            try container.encode(definedByNode, forKey: .definedByNode)
        }
    }

    struct Node: Encodable {
        var id: Int64
        var host: String
        var ipv4: String?
        var port: Int
        var status: String
        var lastSeen: String
        var load: [Double]
        var cpus: Int
        var startedAt: String
        var version: String
        var protocolVersion: Int
        var configHash: String
        var launcherFingerprint: String?
        var configurationDiffers: Bool
        var launcherDiffers: Bool

        enum CodingKeys: String, CodingKey {
            case id, host, ipv4, port, status, load, cpus, version
            case lastSeen = "last_seen", startedAt = "started_at", protocolVersion = "protocol_version", configHash = "config_hash", launcherFingerprint = "launcher_fingerprint"
            case configurationDiffers = "configuration_differs", launcherDiffers = "launcher_differs"
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(id, forKey: .id)
            try container.encode(host, forKey: .host)
            try container.encode(ipv4, forKey: .ipv4)
            try container.encode(port, forKey: .port)
            try container.encode(status, forKey: .status)
            try container.encode(lastSeen, forKey: .lastSeen)
            try container.encode(load, forKey: .load)
            try container.encode(cpus, forKey: .cpus)
            try container.encode(startedAt, forKey: .startedAt)
            try container.encode(version, forKey: .version)
            try container.encode(protocolVersion, forKey: .protocolVersion)
            try container.encode(configHash, forKey: .configHash)
            try container.encode(launcherFingerprint, forKey: .launcherFingerprint)
            try container.encode(configurationDiffers, forKey: .configurationDiffers)
            try container.encode(launcherDiffers, forKey: .launcherDiffers)
        }
    }

    var cluster: Cluster?
    var nodes: [Node]

    enum CodingKeys: String, CodingKey { case cluster, nodes }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(cluster, forKey: .cluster)
        try container.encode(nodes, forKey: .nodes)
    }
}

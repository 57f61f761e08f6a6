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
        let headers = ["ID", "Host", "IPv4", "Port", "Status", "Last Seen"]
        let minimums = [2, 13, 13, 4, NodeStatus.allCases.map(\.rawValue.count).max() ?? 0, 0]
        let rows = nodes.map { node in
            [String(node.id), node.host, node.ipv4 ?? "", String(node.port),
             node.displayStatus(now: now, heartbeatInterval: heartbeatInterval), formatter.string(from: node.lastSeen)]
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
        let clusterObject: Any = cluster.map { c -> [String: Any] in
            ["protocol": c.protocol.rawValue, "defined_at": iso(c.definedAt), "defined_by_node": c.definedByNode.map { $0 as Any } ?? NSNull()]
        } ?? NSNull()
        let outliers = nodes.consistencyOutliers()
        let nodeObjects: [[String: Any]] = nodes.map { node in
            ["id": node.id, "host": node.host, "ipv4": node.ipv4.map { $0 as Any } ?? NSNull(), "port": node.port,
             "status": node.displayStatus(now: now, heartbeatInterval: heartbeatInterval), "last_seen": iso(node.lastSeen),
             "load": [node.load.one, node.load.five, node.load.fifteen], "cpus": node.cpus, "started_at": iso(node.startedAt),
             "version": node.version, "config_hash": node.configHash,
             "launcher_fingerprint": node.launcherFingerprint.map { $0 as Any } ?? NSNull(),
             "configuration_differs": outliers.configuration.contains(node.id), "launcher_differs": outliers.launcher.contains(node.id)]
        }
        let data = (try? JSONSerialization.data(withJSONObject: ["cluster": clusterObject, "nodes": nodeObjects],
                                                options: [.prettyPrinted, .sortedKeys])) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}

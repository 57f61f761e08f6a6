import ArgumentParser
import DroverCluster
import DroverKernel
import DroverPlugins
import Foundation
import Logging

struct Place: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Dry-run the balancer for a user against the live cluster.",
        discussion: "Prints every node with its score, or the reason it is excluded, and the node a session would go to now. Places nothing.")

    @OptionGroup var options: ConfigOptions
    @Option(help: "The user to place.") var user: String
    @Option(help: "The session kind to place (default: the configured default kind).") var kind: String?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let user = user
        let asked = kind
        let (strategy, survey, decision, failure) = try await RegistryAccess.using(options) { access in
            let lb = access.configuration.effectiveLoadBalancer
            let strategy: any BalancerStrategy
            do {
                let context = PluginContext(access.configuration, key: access.key, logger: Logger(label: "drover"))
                strategy = try PluginCatalog.builtin.makeBalancer(lb, context: context)
            } catch {
                throw CommandFailure("\(error)", status: 2)
            }
            let engine = PlacementEngine(store: access.store, strategy: strategy, heartbeatInterval: lb.heartbeatInterval, diagnostics: .off,
                                         maxSessionsPerNode: lb.maxSessionsPerNode)
            do {
                let kind = asked ?? access.configuration.kinds.defaultKind ?? SessionKindNames.legacy
                let (survey, decision) = try await engine.dryRun(PlacementRequest(username: user, kind: kind))
                return (strategy, survey, decision as PlacementDecision?, nil as String?)
            } catch let error as PlacementError {
                return (strategy, try await engine.survey(kind: asked ?? access.configuration.kinds.defaultKind ?? SessionKindNames.legacy), nil, error.description)
            }
        }
        if json {
            printJSON(strategy: strategy.name, survey: survey, decision: decision, failure: failure)
        } else {
            printTable(strategy: strategy.name, survey: survey, decision: decision, failure: failure)
        }
        if failure != nil { throw ExitCode(1) }
    }

    func printTable(strategy: String, survey: PlacementCandidates, decision: PlacementDecision?, failure: String?) {
        print("Balancer: \(strategy)   User: \(user)" + (kind.map { "   Kind: \($0)" } ?? ""))
        var rows: [(Int64, String, String)] = []
        for candidate in survey.candidates {
            let score = decision?.scores.first { $0.node == candidate.node.id }?.detail ?? "\(candidate.activeSessions) sessions"
            rows.append((candidate.node.id, candidate.endpoint, score + (decision?.chosen == candidate.node.id ? "   <- chosen" : "")))
        }
        for (node, reason) in survey.excluded {
            rows.append((node.id, "\(node.host):\(node.port)", "excluded: \(reason)"))
        }
        let width = max(7, (rows.map { $0.1.count }.max() ?? 0) + 2)
        print("Node  " + "Address".padding(toLength: width, withPad: " ", startingAt: 0) + "Score")
        for row in rows.sorted(by: { $0.0 < $1.0 }) {
            print(String(row.0).padding(toLength: 6, withPad: " ", startingAt: 0) + row.1.padding(toLength: width, withPad: " ", startingAt: 0) + row.2)
        }
        if let note = decision?.note { print("Note: \(note)") }
        if let decision, let chosen = survey.candidates.first(where: { $0.node.id == decision.chosen }) {
            print("Choice: node \(decision.chosen) (\(chosen.endpoint))")
        } else if let failure {
            print("Choice: none — \(failure)")
        }
    }

    func printJSON(strategy: String, survey: PlacementCandidates, decision: PlacementDecision?, failure: String?) {
        var nodes: [PlacementJSON.Node] = survey.candidates.map { candidate in
            let score = decision?.scores.first { $0.node == candidate.node.id }
            return .init(id: candidate.node.id, address: candidate.endpoint, sessions: candidate.activeSessions, score: score?.value,
                         detail: score?.detail ?? "", excluded: nil)
        }
        nodes += survey.excluded.map { .init(id: $0.node.id, address: "\($0.node.host):\($0.node.port)", excluded: $0.reason) }
        nodes.sort { $0.id < $1.id }
        let object = PlacementJSON(balancer: strategy, user: user, kind: kind, nodes: nodes, chosen: decision?.chosen, note: decision?.note, error: failure)
        print(CommandOutput.json(object))
    }
}

/// `drover place --json`: every key present, `null` where there is no value.
struct PlacementJSON: Encodable {
    struct Node: Encodable {
        var id: Int64
        var address: String
        /// Candidates only (an excluded node has none of these keys).
        var sessions: Int?
        var score: Double?
        var detail: String?
        var excluded: String?
        var isCandidate = true

        init(id: Int64, address: String, sessions: Int, score: Double?, detail: String, excluded: String?) {
            (self.id, self.address, self.sessions, self.score, self.detail, self.excluded) = (id, address, sessions, score, detail, excluded)
        }

        init(id: Int64, address: String, excluded: String) {
            (self.id, self.address, self.excluded, isCandidate) = (id, address, excluded, false)
        }

        enum CodingKeys: String, CodingKey { case id, address, sessions, score, detail, excluded }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(id, forKey: .id)
            try container.encode(address, forKey: .address)
            try container.encode(excluded, forKey: .excluded)
            guard isCandidate else { return }
            try container.encode(sessions, forKey: .sessions)
            try container.encode(score, forKey: .score)
            try container.encode(detail, forKey: .detail)
        }
    }

    var balancer: String
    var user: String
    var kind: String?
    var nodes: [Node]
    var chosen: Int64?
    var note: String?
    var error: String?

    enum CodingKeys: String, CodingKey { case balancer, user, kind, nodes, chosen, note, error }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(balancer, forKey: .balancer)
        try container.encode(user, forKey: .user)
        try container.encode(kind, forKey: .kind)
        try container.encode(nodes, forKey: .nodes)
        try container.encode(chosen, forKey: .chosen)
        try container.encode(note, forKey: .note)
        try container.encode(error, forKey: .error)
    }

}

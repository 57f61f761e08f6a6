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
        var nodes: [[String: Any]] = survey.candidates.map { candidate in
            let score = decision?.scores.first { $0.node == candidate.node.id }
            return ["id": candidate.node.id, "address": candidate.endpoint, "sessions": candidate.activeSessions,
                    "score": score?.value.map { $0 as Any } ?? NSNull(), "detail": score?.detail ?? "", "excluded": NSNull()]
        }
        nodes += survey.excluded.map { ["id": $0.node.id, "address": "\($0.node.host):\($0.node.port)", "excluded": $0.reason] }
        nodes.sort { ($0["id"] as? Int64 ?? 0) < ($1["id"] as? Int64 ?? 0) }
        let object: [String: Any] = ["balancer": strategy, "user": user, "kind": kind.map { $0 as Any } ?? NSNull(), "nodes": nodes,
                                     "chosen": decision.map { $0.chosen as Any } ?? NSNull(),
                                     "note": decision?.note.map { $0 as Any } ?? NSNull(), "error": failure.map { $0 as Any } ?? NSNull()]
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])) ?? Data()
        print(String(decoding: data, as: UTF8.self))
    }
}

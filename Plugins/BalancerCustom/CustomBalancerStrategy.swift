public import DroverKernel
import Foundation
public import Logging

/// Asks an executable of the operator's to pick the node (`balancer=custom`).
///
/// The script gets `DROVER_USERNAME`, `DROVER_SESSION_KIND` and `DROVER_NODES` (the
/// candidates' `host:port`, comma separated; each can run the kind) in its environment and must print exactly one of those entries. A script that is
/// missing, fails, runs past `timeout`, or prints anything else is logged with the reason and
/// the session is placed as `balancer=sessions` would: a user never waits on a broken script.
public struct CustomBalancerStrategy: BalancerStrategy {
    public let name = CustomBalancerStrategyFactory.name
    public let script: String
    public let timeoutSeconds: Int
    let logger: Logger

    public init(script: String, timeoutSeconds: Int, logger: Logger) {
        self.script = script
        self.timeoutSeconds = timeoutSeconds
        self.logger = logger
    }

    public func prepare(_ request: PlacementRequest, among candidates: [PlacementCandidate]) async -> PlacementPreparation {
        let username = request.username
        let entries = candidates.map(\.endpoint)
        let outcome = await ScriptRunner.run(script, environment: ["DROVER_USERNAME": username, "DROVER_SESSION_KIND": request.kind, "DROVER_NODES": entries.joined(separator: ",")],
                                             timeoutSeconds: timeoutSeconds)
        let failure: String
        switch outcome {
        case .output(let text):
            let answer = text.trimmingCharacters(in: .whitespacesAndNewlines)
            if let match = candidates.first(where: { $0.endpoint == answer }) {
                return PlacementPreparation(preferred: match.node.id, note: "\(script) chose \(answer)")
            }
            failure = "it printed '\(answer.prefix(200))', which is not one of \(entries.joined(separator: ","))"
        case .failed(let reason):
            failure = reason
        }
        let note = "custom balancer script \(script) failed: \(failure); placed by sessions instead"
        logger.warning("custom balancer script failed; placed by sessions instead",
                       metadata: ["script": "\(script)", "reason": "\(failure)", "user": "\(username)"])
        return PlacementPreparation(preferred: nil, note: note)
    }

    public func choose(_ request: PlacementRequest, among candidates: [PlacementCandidate], prepared: PlacementPreparation) throws -> PlacementDecision {
        let scores = candidates.map { PlacementDecision.Score(node: $0.node.id, value: nil, detail: "\($0.endpoint), \($0.activeSessions) sessions") }
        if let preferred = prepared.preferred, candidates.contains(where: { $0.node.id == preferred }) {
            return PlacementDecision(chosen: preferred, scores: scores, note: prepared.note)
        }
        guard let fallback = PlacementCandidate.fewestSessions(candidates) else { throw PlacementError.noCandidates }
        return PlacementDecision(chosen: fallback.node.id, scores: scores, note: prepared.note ?? "the script's node left; placed by sessions instead")
    }
}

/// Selects ``CustomBalancerStrategy`` with `balancer=custom`.
public enum CustomBalancerStrategyFactory: BalancerStrategyFactory {
    public static let name = "custom"
    public static let configurationKeys = ["custom-balancer-script"]
    /// How long a script may run when `timeout=0` (the system's default) is configured.
    static let defaultTimeout = 10

    /// Reads `custom-balancer-script` (default `balancer-script` in the configuration directory)
    /// and `timeout` (10; 0 means 10 here, so a hung script never blocks a user).
    public static func make(config: LoadBalancerConfiguration, context: PluginContext) throws -> any BalancerStrategy {
        let raw = config.pluginSettings["custom-balancer-script"] ?? "balancer-script"
        let script = raw.hasPrefix("/") ? raw : context.configDirectory + "/" + raw
        return CustomBalancerStrategy(script: script, timeoutSeconds: config.timeout > 0 ? config.timeout : defaultTimeout,
                                      logger: context.logger)
    }
}

import ArgumentParser
import DroverKernel
import DroverPlugins
import Foundation
import Logging

/// A helper the tests run as separate processes, to contend with each other through the real
/// plugins: the part of a node that a test needs, and nothing else.
@main
struct DroverProbe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drover-probe",
        abstract: "Test helper: act as one contending process against the configured plugins.",
        subcommands: [Claim.self])
}

/// Sleeps until `epoch` (seconds), so that processes started one by one race together.
func waitUntil(epoch: Double) async throws {
    let delay = epoch - Date().timeIntervalSince1970
    if delay > 0 { try await Task.sleep(for: .milliseconds(Int(delay * 1000))) }
}

struct Claim: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Try to move a suspended session to a node by compare-and-set; prints 'won' or 'lost'.")

    @Option var configDir: String
    @Option var session: String
    @Option var node: Int64
    @Option(help: "Start at this Unix time, to race with the others.") var at: Double = 0

    func run() async throws {
        let config = try DroverConfiguration.load(directory: configDir)
        let key = try? SecureCookieKey.load(from: config.secureCookieKeyPath)
        let context = PluginContext(configDirectory: config.directory, dataDirectory: config.server.dataDirectory,
                                    secureCookieKey: key, logger: Logger(label: "drover-probe"))
        let store = try PluginCatalog.builtin.registryStore(for: config.database).make(config: config.database, context: context)
        try await waitUntil(epoch: at)
        let won = try await store.transitionSession(session, from: SessionOwnership(node: nil, state: .suspended),
                                                    to: SessionOwnership(node: node, state: .starting))
        print(won ? "won" : "lost")
        await store.close()
    }
}

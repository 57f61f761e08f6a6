import ArgumentParser

/// Commands whose machinery is not in this build yet. They are listed so that `drover --help`
/// shows the whole command set, and fail with status 1 and a plain explanation.
protocol PendingCommand: ParsableCommand {
    static var needs: String { get }
}

extension PendingCommand {
    func run() throws {
        fail("'\(Self._commandName)' is not available in this build yet: it needs \(Self.needs)", status: 1)
    }
}

struct ActiveSessions: PendingCommand {
    static let configuration = CommandConfiguration(commandName: "active-sessions", abstract: "List this node's sessions.")
    static let needs = "sessions"
    @OptionGroup var options: ConfigOptions
}

struct SuspendAll: PendingCommand {
    static let configuration = CommandConfiguration(commandName: "suspend-all", abstract: "Suspend every session on this node.")
    static let needs = "sessions"
    @OptionGroup var options: ConfigOptions
}


import ArgumentParser
import DroverKernel
import DroverPlugins
import DroverVersion
import Foundation
import Logging

/// The Drover admin command line.
@main
struct Drover: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drover",
        abstract: "Administer a Drover node and its cluster.",
        discussion: """
            Every command reads the configuration directory given by --config-dir (before or after \
            the command), else $DROVER_CONFIG_DIR, else /etc/drover.
            Exit status: 0 success, 1 the operation failed, 2 bad usage or bad configuration.
            """,
        version: DroverVersion.versionLine,
        subcommands: [
            ListNodes.self, DeleteNode.self, ResetCluster.self, Offline.self, Online.self, Reload.self,
            Status.self, ActiveSessions.self, SuspendAll.self, Drain.self, LockTester.self, GenerateKey.self,
            EncryptPassword.self, MigrateDB.self, Verify.self, Place.self, RevokeUser.self, Audit.self,
        ])

    /// `drover [--config-dir DIR] COMMAND …`: the option may stand before the command, where
    /// ArgumentParser would not see it; move it behind the command name.
    static func main() async {
        var arguments = Array(CommandLine.arguments.dropFirst())
        var leading: [String] = []
        while let first = arguments.first, first.hasPrefix("--config-dir") {
            leading.append(arguments.removeFirst())
            if first == "--config-dir", !arguments.isEmpty { leading.append(arguments.removeFirst()) }
        }
        if !leading.isEmpty, !arguments.isEmpty, !arguments[0].hasPrefix("-") {
            arguments.insert(contentsOf: leading, at: 1)
        } else {
            arguments = leading + arguments
        }
        var command: any ParsableCommand
        do {
            command = try parseAsRoot(arguments)
        } catch {
            exitMappingUsageErrors(error)
        }
        do {
            if var async = command as? any AsyncParsableCommand {
                try await async.run()
            } else {
                try command.run()
            }
        } catch let failure as CommandFailure {
            FileHandle.standardError.write(Data("drover: \(failure.message)\n".utf8))
            Foundation.exit(failure.status)
        } catch where String(reflecting: type(of: error)).hasPrefix("ArgumentParser.") {
            // Help, a validation error, an exit code: ArgumentParser's own way.
            exitMappingUsageErrors(error)
        } catch {
            // Anything else a command let through failed the operation (a registry error, say).
            FileHandle.standardError.write(Data("drover: \(error)\n".utf8))
            Foundation.exit(1)
        }
    }

    /// Prints the error as ArgumentParser would, but exits 2 for bad usage (not its 64), as
    /// every Drover executable does.
    static func exitMappingUsageErrors(_ error: any Error) -> Never {
        let code = exitCode(for: error)
        guard code == .validationFailure else { exit(withError: error) }
        FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
        Foundation.exit(2)
    }
}

/// The `--config-dir` option every command takes.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: "Configuration directory (default: $DROVER_CONFIG_DIR, else /etc/drover).")
    var configDir: String?

    var directory: String { DroverConfiguration.directory(option: configDir) }

    /// The configuration.
    /// - Throws: ``CommandFailure`` (exit 2) with the one-line error.
    func load() throws -> DroverConfiguration {
        do {
            return try DroverConfiguration.load(directory: directory, pluginKeys: PluginCatalog.builtin.loadBalancerPluginKeys)
        } catch {
            throw CommandFailure("\(error)", status: 2)
        }
    }
}

/// Why a command failed, and its exit status: 1 the operation failed, 2 bad usage or bad
/// configuration. Commands throw it; `main` alone prints it (`drover: message`) and exits, so
/// every command closes what it opened on the way out.
struct CommandFailure: Error, CustomStringConvertible {
    var message: String
    var status: Int32

    init(_ message: String, status: Int32) {
        self.message = message
        self.status = status
    }

    var description: String { message }
}

/// Writes a line to standard output at once, even when it is a pipe or a file, for commands
/// that keep running after they report (an operator or a script is waiting for the line).
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

/// What the commands print for `--json`: pretty-printed, keys sorted, every key present
/// (the types encode their nulls).
enum CommandOutput {
    static func json(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: (try? encoder.encode(value)) ?? Data(), as: UTF8.self)
    }
}

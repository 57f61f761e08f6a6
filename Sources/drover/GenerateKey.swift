import ArgumentParser
import DroverKernel

struct GenerateKey: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate-key",
        abstract: "Write a new random secure cookie key (mode 0600).",
        discussion: "Generate it once and copy the same file to every node of the cluster.")

    @OptionGroup var options: ConfigOptions

    @Option(name: .long, help: "Where to write the key (default: the configured secure-cookie-key path).")
    var output: String?

    @Flag(name: .long, help: "Replace an existing key.")
    var force = false

    func run() throws {
        let path = try output ?? options.load().secureCookieKeyPath
        do {
            let key = try SecureCookieKey.generate(at: path, force: force)
            print("Wrote a new secure cookie key to \(key.path) (mode 0600). Copy this file to every node.")
        } catch {
            throw CommandFailure("\(error)", status: 1)
        }
    }
}

import Foundation
import PackagePlugin

/// Embeds the release version from the repository's `VERSION` file into `DroverVersion`: the
/// one place a release's version is written, read again by every build (and by the Debian
/// package script), so two builds of different versions never claim the same one.
///
/// `DROVER_TEST_VERSION_FILE`, when set, names another file to read instead: the rolling-upgrade
/// test builds its "N+1" from this tree that way, never through a switch in the shipped binary.
@main
struct EmbedVersion: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) throws -> [Command] {
        let file = ProcessInfo.processInfo.environment["DROVER_TEST_VERSION_FILE"].map { URL(fileURLWithPath: $0) }
            ?? context.package.directoryURL.appending(path: "VERSION")
        let output = context.pluginWorkDirectoryURL.appending(path: "Release.swift")
        // A line of digits and dots (and a pre-release suffix), checked at build time: the
        // version goes into a Swift string literal and into package names.
        let script = """
            v=$(tr -d ' \\n\\r' < "$1") || exit 1
            case "$v" in ''|*[!0-9A-Za-z.~+-]*) echo "$1: the version must be like 1.2.3 (digits, dots, letters, ~ + -), not '$v'" >&2; exit 1;; esac
            printf 'extension DroverVersion {\\n    /// The release, from the VERSION file.\\n    public static let release = "%s"\\n}\\n' "$v" > "$2"
            """
        return [.buildCommand(displayName: "Embedding the release version from \(file.lastPathComponent)",
                              executable: URL(fileURLWithPath: "/bin/sh"),
                              arguments: ["-c", script, "sh", file.path(percentEncoded: false), output.path(percentEncoded: false)],
                              inputFiles: [file], outputFiles: [output])]
    }
}

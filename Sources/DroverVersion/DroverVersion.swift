/// What a build of Drover is, and what it can work with. The release string is for people
/// (`--version`, `list-nodes`, the status endpoint); compatibility is decided by integers: the
/// node-to-node protocol version here, and the registry's schema version (the SQL registry's
/// migrations). docs/PROTOCOL.md says what each protocol version changed.
public enum DroverVersion {
    /// The node-to-node protocol this build speaks: internal calls, hop openings, the guard's
    /// pipe protocol. Raised when any of them changes in a way an older node would not handle.
    ///
    /// `DROVER_TEST_NEXT_RELEASE` (a compilation condition only the rolling-upgrade test's
    /// second build sets, `scripts/build-next-release.sh`) makes the build a release after this
    /// one: the next protocol and schema (``SQLRegistry``'s test steps) and one internal call
    /// more. No shipped build sets it; nothing at run time switches on it.
    #if DROVER_TEST_NEXT_RELEASE
    public static let clusterProtocol = 2
    #else
    public static let clusterProtocol = 1
    #endif

    /// The registry schema this build migrates to (the SQL registry's last migration; a test
    /// holds the two together).
    #if DROVER_TEST_NEXT_RELEASE
    public static let registrySchema = 12
    #else
    public static let registrySchema = 10
    #endif

    /// How far apart two nodes' protocols may be and still share a cluster: one step, so a
    /// rolling upgrade (or a roll back) mixes a release with the next one only.
    public static let protocolWindow = 1

    /// Whether a node speaking `other` may share a cluster with this build.
    public static func acceptsPeer(protocol other: Int) -> Bool {
        abs(other - clusterProtocol) <= protocolWindow
    }

    /// The protocols this build shares a cluster with, for messages: "1…2" or "0…2".
    public static var window: ClosedRange<Int> {
        max(0, clusterProtocol - protocolWindow)...(clusterProtocol + protocolWindow)
    }

    /// A build as messages name it: `Drover 0.3.0 (cluster protocol 1)`.
    public static func describe(release: String, protocol version: Int) -> String {
        "Drover \(release) (cluster protocol \(version))"
    }

    /// What `--version` prints: the release, then the protocol and schema it speaks.
    public static var versionLine: String {
        "Drover \(release) (cluster protocol \(clusterProtocol), registry schema \(registrySchema))"
    }
}

// swift-tools-version:6.1
import PackageDescription

/// Every setting that all Drover targets share, applied in one place.
let sharedSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
] + (Context.environment["DROVER_TEST_NEXT_RELEASE"] == "1" ? [.define("DROVER_TEST_NEXT_RELEASE")] : [])
// The line above: the rolling-upgrade test's second build (scripts/build-next-release.sh) is a
// release after this tree's, in its own scratch path; no other build sets it.

/// The runtime plugins: one target per implementation, each in `Plugins/<Name>`.
/// To add an in-house plugin, add its folder name here and its factory to
/// `PluginCatalog.builtin` in `Sources/DroverPlugins` (see README, "Adding a plugin").
let runtimePlugins: [(name: String, dependencies: [Target.Dependency])] = [
    ("BalancerSessions", []),
    ("BalancerSystemLoad", []),
    ("BalancerUserHash", []),
    ("BalancerCustom", [.product(name: "Logging", package: "swift-log")]),
    ("BalancerRandomTwo", []),
    ("DiagnosticsTmp", []),
    ("LockLinkBased", []),
    ("LockAdvisory", []),
    ("RegistrySQLite", ["CSQLite3", "DroverRegistrySQL", .product(name: "NIOPosix", package: "swift-nio")]),
    ("RegistryPostgres", ["CLibpq", "DroverRegistrySQL", .product(name: "NIOPosix", package: "swift-nio"),
                          .product(name: "Logging", package: "swift-log")]),
    ("DiagnosticsStderr", []),
]

let package = Package(
    name: "Drover",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "droverd", targets: ["droverd"]),
        .executable(name: "drover", targets: ["drover"]),
        .executable(name: "drover-demo-session", targets: ["drover-demo-session"]),
        .executable(name: "drover-session-guard", targets: ["drover-session-guard"]),
        // For packages built on Drover's parts, such as the HTTP fuzz target in Fuzz/HTTP.
        .library(name: "DroverServer", targets: ["DroverServer", "DroverCluster", "DroverSessionProtocol", "DroverKernel", "DroverPlugins"]),
        // A plugin's own tests: in-memory doubles and the conformance suite of each plugin kind,
        // on the kernel alone (README, "Adding an in-house plugin").
        .library(name: "DroverPluginTesting", targets: ["DroverPluginTesting"]),
        // The cluster harness: real droverd processes, in-process nodes, network namespaces.
        .library(name: "DroverTesting", targets: ["DroverTesting"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        .systemLibrary(
            name: "COpenSSL", path: "Sources/COpenSSL", pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]),
        .systemLibrary(
            name: "CSQLite3", path: "Sources/CSQLite3", pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(
            name: "CPAM", path: "Sources/CPAM",
            providers: [.apt(["libpam0g-dev"])]),
        .systemLibrary(
            name: "CLibpq", path: "Sources/CLibpq", pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]),

        .target(name: "CShims", path: "Sources/CShims"),
        // The release version (from VERSION, embedded at build time) and the protocol version.
        .target(name: "DroverVersion", swiftSettings: sharedSettings, plugins: ["EmbedVersion"]),
        .plugin(name: "EmbedVersion", capability: .buildTool(), path: "Sources/EmbedVersion"),
        .target(
            name: "DroverKernel",
            dependencies: [
                "COpenSSL", "CShims",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: sharedSettings),
        .target(
            name: "DroverRegistrySQL",
            dependencies: ["DroverKernel"],
            swiftSettings: sharedSettings),
        // The session guard's contract with droverd: its pipe protocol and the cgroups of a session.
        .target(
            name: "DroverSessionProtocol",
            dependencies: ["DroverKernel", "DroverVersion"],
            swiftSettings: sharedSettings),
        // The lock providers alone: what the session guard links.
        .target(
            name: "DroverLockPlugins",
            dependencies: ["DroverKernel", "LockLinkBased", "LockAdvisory"],
            swiftSettings: sharedSettings),
        .target(
            name: "DroverPlugins",
            dependencies: ["DroverKernel", "DroverLockPlugins"] + runtimePlugins.map { .target(name: $0.name) },
            swiftSettings: sharedSettings),
        .target(
            name: "DroverCluster",
            dependencies: [
                "DroverKernel", "DroverSessionProtocol", "DroverVersion", "CShims",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: sharedSettings),
        .target(
            name: "DroverServer",
            dependencies: [
                "DroverKernel", "DroverCluster", "CPAM",
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: sharedSettings),
        .target(
            name: "DroverPluginTesting",
            dependencies: ["DroverKernel"],
            swiftSettings: sharedSettings),
        .target(
            name: "DroverTesting",
            dependencies: ["DroverKernel", "DroverPluginTesting", "DroverCluster", "DroverServer", "DroverPlugins", "CShims",
                           .product(name: "NIOCore", package: "swift-nio"),
                           .product(name: "NIOEmbedded", package: "swift-nio"),
                           .product(name: "NIOHTTP1", package: "swift-nio"),
                           .product(name: "Logging", package: "swift-log"),
                           .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
            swiftSettings: sharedSettings),

        .executableTarget(
            name: "droverd",
            dependencies: [
                "DroverKernel", "DroverSessionProtocol", "DroverPlugins", "DroverServer", "DroverCluster", "DroverVersion",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: sharedSettings),
        .executableTarget(
            name: "drover",
            dependencies: [
                "DroverKernel", "DroverSessionProtocol", "DroverPlugins", "DroverCluster", "DroverVersion", "RegistrySQLite",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: sharedSettings),

        .executableTarget(
            name: "drover-session-guard",
            dependencies: [
                "DroverKernel", "DroverSessionProtocol", "DroverLockPlugins", "DroverVersion", "CShims",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: sharedSettings),
        .executableTarget(
            name: "drover-demo-session",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: sharedSettings),
        .executableTarget(
            name: "drover-probe",
            dependencies: [
                "DroverKernel", "DroverPlugins", "DroverCluster", "DroverServer", "DroverTesting",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: sharedSettings),

        .testTarget(
            name: "DroverRegistryTests",
            dependencies: ["DroverKernel", "DroverPlugins", "DroverRegistrySQL", "DroverVersion", "RegistryPostgres", "RegistrySQLite", "DroverTesting", "drover-probe"],
            swiftSettings: sharedSettings),
        .testTarget(
            name: "DroverLockTests",
            dependencies: ["DroverKernel", "DroverPlugins", "DroverTesting", "LockLinkBased", "drover-probe"],
            swiftSettings: sharedSettings),
        .testTarget(
            name: "DroverClusterTests",
            dependencies: ["DroverKernel", "DroverSessionProtocol", "DroverCluster", "DroverTesting", "droverd", "drover"],
            swiftSettings: sharedSettings),
        .testTarget(
            name: "DroverBalancerTests",
            dependencies: ["DroverKernel", "DroverCluster", "DroverPlugins", "DroverTesting", "drover-probe", "drover"],
            swiftSettings: sharedSettings),
        .testTarget(
            name: "DroverSessionTests",
            dependencies: ["DroverCluster", "DroverKernel", "DroverSessionProtocol", "DroverPlugins", "DroverTesting", "droverd", "drover", "drover-demo-session",
                           .product(name: "Logging", package: "swift-log")],
            swiftSettings: sharedSettings),
        .testTarget(
            name: "DroverChaosTests",
            dependencies: ["DroverTesting", "droverd", "drover", "drover-demo-session"],
            swiftSettings: sharedSettings),
        .testTarget(
            name: "DroverKernelTests",
            dependencies: ["DroverKernel", "DroverTesting"],
            swiftSettings: sharedSettings),
        .testTarget(
            name: "DroverPluginsTests",
            dependencies: ["DroverKernel", "DroverPlugins", "DroverTesting", "drover-probe"],
            swiftSettings: sharedSettings),
        // The HTTP server, the proxy and the edge, in process (no droverd).
        .testTarget(
            name: "DroverServerTests",
            dependencies: ["DroverKernel", "DroverCluster", "DroverServer", "DroverTesting",
                           .product(name: "NIOCore", package: "swift-nio"),
                           .product(name: "NIOPosix", package: "swift-nio"),
                           .product(name: "NIOHTTP1", package: "swift-nio"),
                           .product(name: "NIOEmbedded", package: "swift-nio"),
                           .product(name: "NIOSSL", package: "swift-nio-ssl"),
                           .product(name: "Logging", package: "swift-log")],
            swiftSettings: sharedSettings),
        // droverd and drover as processes.
        .testTarget(
            name: "DroverExecutableTests",
            dependencies: ["DroverKernel", "DroverTesting", "droverd", "drover"],
            swiftSettings: sharedSettings),
    ] + runtimePlugins.map { plugin in
        .target(
            name: plugin.name,
            dependencies: ["DroverKernel"] + plugin.dependencies,
            path: "Plugins/\(plugin.name)",
            swiftSettings: sharedSettings)
    }
)

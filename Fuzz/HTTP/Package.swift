// swift-tools-version:6.1
// The fuzz targets built on Drover's modules (the request path through a node's server, the
// client request framer against llhttp, the proxy's reading of session answers, and the sign-in
// cookie and node-to-node signature checks), a package of its own so that its `-sanitize=fuzzer`
// build never touches the main build. Fuzz/run.sh builds it with `swift build --package-path Fuzz/HTTP`.
import Foundation
import PackageDescription

/// The Drover checkout this file sits in, whatever its directory is called.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let drover = root.lastPathComponent.lowercased()

let package = Package(
    name: "DroverFuzzHTTP",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: root.path),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .target(name: "CFuzzMain"),
        .executableTarget(
            name: "FuzzHTTP",
            dependencies: [
                "CFuzzMain",
                .product(name: "DroverServer", package: drover),
                .product(name: "DroverTesting", package: drover),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(
            name: "FuzzRequest",
            dependencies: [
                "CFuzzMain",
                .product(name: "DroverTesting", package: drover),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(
            name: "FuzzResponse",
            dependencies: [
                "CFuzzMain",
                .product(name: "DroverServer", package: drover),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(
            name: "FuzzCookieAndSignature",
            dependencies: [
                "CFuzzMain",
                .product(name: "DroverServer", package: drover),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]),
    ]
)

import DroverKernel
import DroverTesting
import Foundation
import Testing

@Suite struct DroverConfigurationTests {
    @Test func emptyDirectoryIsASingleNodeWithDefaults() async throws {
        let dir = TemporaryDirectory()
        let config = try DroverConfiguration.load(directory: dir.path)
        #expect(config.isClustered == false)
        #expect(config.server.wwwPort == 8787)
        #expect(config.database.directory == "/var/lib/drover")
        #expect(config.secureCookieKeyPath == dir.path + "/secure-cookie-key")
    }

    @Test func loadBalancerPresenceEnablesClusteringAndNeedsSharedStorage() async throws {
        let dir = TemporaryDirectory()
        try dir.write("load-balancer", "")
        #expect(throws: ConfigurationError(file: dir.path + "/rserver.conf",
            "server-shared-storage-path is required when \(dir.path)/load-balancer exists; set it to a directory every node mounts (e.g. /shared/drover)")) {
            try DroverConfiguration.load(directory: dir.path)
        }
        try dir.write("rserver.conf", "server-shared-storage-path=shared\nserver-data-dir=data\nsecure-cookie-key-file=keys/k\n")
        let config = try DroverConfiguration.load(directory: dir.path)
        #expect(config.isClustered)
        #expect(config.server.sharedStoragePath == dir.path + "/shared")
        #expect(config.database.directory == dir.path + "/data")
        #expect(config.secureCookieKeyPath == dir.path + "/keys/k")
    }

    @Test func withoutLoadBalancerTheRegistryIsTheNodesOwnWhateverDatabaseConfSays() async throws {
        let dir = TemporaryDirectory()
        try dir.write("rserver.conf", "server-data-dir=data\nserver-shared-storage-path=shared\n")
        try dir.write("database.conf", "provider=postgresql\nhost=db.example.com\nconnection-timeout-seconds=7\n")
        let alone = try DroverConfiguration.load(directory: dir.path)
        #expect(alone.registry.provider == "sqlite")
        #expect(alone.registry.directory == dir.path + "/data")
        #expect(alone.registry.connectionTimeoutSeconds == 7)
        #expect(alone.database.provider == "postgresql", "kept for migrate-db")
        #expect(alone.warnings == ["\(dir.path)/database.conf: its postgresql registry is not used while load balancing is off "
            + "(\(dir.path)/load-balancer does not exist): this node runs alone and records its sessions in \(dir.path)/data/drover.sqlite; "
            + "create load-balancer (it may be empty) to join the cluster"])

        try dir.write("load-balancer", "")
        let member = try DroverConfiguration.load(directory: dir.path)
        #expect(member.registry == member.database)
        #expect(member.warnings.isEmpty)

        try FileManager.default.removeItem(atPath: dir.path + "/database.conf")
        try FileManager.default.removeItem(atPath: dir.path + "/load-balancer")
        let embedded = try DroverConfiguration.load(directory: dir.path)
        #expect(embedded.registry == embedded.database && embedded.warnings.isEmpty, "the embedded default says nothing")
    }

    @Test func relativeDirectoryResolvesAgainstTheWorkingDirectory() async throws {
        let dir = TemporaryDirectory()
        try dir.write("conf/rserver.conf", "server-data-dir=data\n")
        // A path relative to the working directory, without changing it under parallel tests.
        let depth = FileManager.default.currentDirectoryPath.split(separator: "/").count
        let relative = String(repeating: "../", count: depth) + dir.path.dropFirst() + "/conf"
        let config = try DroverConfiguration.load(directory: relative)
        #expect(config.directory == dir.path + "/conf")
        #expect(config.server.dataDirectory == dir.path + "/conf/data")
    }

    @Test func missingDirectoryIsAnError() {
        #expect(throws: ConfigurationError(file: "/nonexistent/drover",
            "configuration directory does not exist; pass --config-dir DIR or set DROVER_CONFIG_DIR")) {
            try DroverConfiguration.load(directory: "/nonexistent/drover")
        }
    }

    @Test func unreadableFileIsAnError() async throws {
        let dir = TemporaryDirectory()
        // A directory where a file is expected cannot be read, even by root.
        try FileManager.default.createDirectory(atPath: dir.url("file-locks"), withIntermediateDirectories: false)
        #expect(throws: ConfigurationError.self) { try DroverConfiguration.load(directory: dir.path) }
        do {
            _ = try DroverConfiguration.load(directory: dir.path)
        } catch {
            #expect(error.description.hasPrefix(dir.path + "/file-locks: cannot be read"))
        }
    }

    @Test func badLineInAnyFileIsReportedWithFileAndLine() async throws {
        let dir = TemporaryDirectory()
        try dir.write("database.conf", "provider=sqlite\nport=x\n")
        #expect(throws: ConfigurationError(file: dir.path + "/database.conf", line: 2, "'port' must be a whole number, found 'x'")) {
            try DroverConfiguration.load(directory: dir.path)
        }
    }

    @Test func aPlainPasswordInAFileOthersCanReadIsRefused() throws {
        let dir = TemporaryDirectory()
        let file = try dir.write("database.conf", "provider=postgresql\npassword=s3cret-pw\n", mode: 0o644)
        #expect(throws: ConfigurationError(file: file,
            "holds a plain-text password and may be read by other users (mode 0644); run: chmod 0600 \(file), or store the password encrypted (drover encrypt-password)")) {
            try DroverConfiguration.load(directory: dir.path)
        }
        try dir.write("database.conf", "provider=postgresql\nconnection-uri=postgresql://drover:s3cret-pw@db/drover\n", mode: 0o640)
        #expect(throws: ConfigurationError.self) { try DroverConfiguration.load(directory: dir.path) }
        try dir.write("database.conf", "provider=postgresql\npassword=s3cret-pw\n", mode: 0o600)
        #expect(throws: Never.self) { try DroverConfiguration.load(directory: dir.path) }
        try dir.write("database.conf", "provider=postgresql\npassword=encrypted:AAAA\nconnection-uri=postgresql://drover@db/drover\n", mode: 0o644)
        #expect(throws: Never.self) { try DroverConfiguration.load(directory: dir.path) }
    }

    @Test func directoryOptionThenEnvironmentThenDefault() {
        #expect(DroverConfiguration.directory(option: "/a", environment: ["DROVER_CONFIG_DIR": "/b"]) == "/a")
        #expect(DroverConfiguration.directory(option: nil, environment: ["DROVER_CONFIG_DIR": "/b"]) == "/b")
        #expect(DroverConfiguration.directory(option: nil, environment: [:]) == "/etc/drover")
    }
}

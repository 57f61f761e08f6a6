import DroverKernel
import Testing

@Suite struct DatabaseConfigurationTests {
    func parse(_ text: String) throws(ConfigurationError) -> DatabaseConfiguration {
        try DatabaseConfiguration(parsing: text, path: "/etc/drover/database.conf", baseDirectory: "/etc/drover", defaultDirectory: "/var/lib/drover")
    }

    @Test func defaults() async throws {
        let config = try parse("")
        #expect(config.provider == "sqlite")
        #expect(config.directory == "/var/lib/drover")
        #expect(config.host == "localhost")
        #expect(config.port == 5432)
        #expect(config.database == "drover")
        #expect(config.username == nil)
        #expect(config.password == nil)
        #expect(config.connectionURI == nil)
        #expect(config.connectionTimeoutSeconds == 10)
        #expect(config.poolSize == 4)
    }

    @Test func readsEveryKey() async throws {
        let config = try parse("""
            provider=postgresql
            directory=db
            host=db.example.com
            port=6543
            database=cluster
            username=drover
            password=s3cret
            connection-uri=postgresql://drover@db.example.com/cluster
            connection-timeout-seconds=3
            pool-size=8
            """)
        #expect(config.provider == "postgresql")
        #expect(config.directory == "/etc/drover/db")
        #expect(config.host == "db.example.com")
        #expect(config.port == 6543)
        #expect(config.database == "cluster")
        #expect(config.username == "drover")
        #expect(config.password == .plain("s3cret"))
        #expect(config.connectionURI == "postgresql://drover@db.example.com/cluster")
        #expect(config.connectionTimeoutSeconds == 3)
        #expect(config.poolSize == 8)
    }

    @Test func tlsKeysAreLibpqsAndChecked() async throws {
        let config = try parse("sslmode=verify-full\nsslrootcert=/etc/ssl/certs/ca-certificates.crt\n")
        #expect(config.sslMode == "verify-full")
        #expect(config.sslRootCertificate == "/etc/ssl/certs/ca-certificates.crt")
        #expect(try parse("").sslMode == nil)
        #expect(throws: ConfigurationError.self) { try parse("sslmode=on\n") }
        #expect(throws: ConfigurationError.self) { try parse("sslrootcert=no-such-ca.pem\n") }
    }

    @Test func encryptedPasswordIsRecognisedAndNeverPrinted() async throws {
        let config = try parse("password=encrypted:abcdef\n")
        #expect(config.password == .encrypted("abcdef"))
        #expect("\(config)".contains("abcdef") == false)
        #expect("\(try parse("password=hunter2hunter2\n"))".contains("hunter2") == false)
    }

    @Test(arguments: [
        ("port=0", 1, "'port' must be from 1 to 65535, found 0"),
        ("pool-size=0", 1, "'pool-size' must be from 1 to 1000, found 0"),
        ("connection-timeout-seconds=-3", 1, "'connection-timeout-seconds' must be from 1 to 3600, found -3"),
        ("connection-uri=mysql://x", 1, "'connection-uri' must start with postgresql:// (e.g. postgresql://drover@db.example.com:5432/drover)"),
        ("database=a/b", 1, "'database' is a name, not a path; use 'directory' for the SQLite file's folder"),
        ("passwd=x", 1, "unknown key 'passwd'; known keys are provider, directory, host, port, database, username, password, connection-uri, connection-timeout-seconds, pool-size, sslmode, sslrootcert"),
    ])
    func rejectsBadInput(text: String, line: Int, message: String) {
        #expect(throws: ConfigurationError(file: "/etc/drover/database.conf", line: line, message)) { try parse(text) }
    }
}

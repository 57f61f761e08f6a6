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
        #expect(config.hosts == ["localhost"])
        #expect(config.ports == [5432])
        #expect(config.targetSessionAttributes == nil, "one host: libpq's own default")
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
        #expect(config.hosts == ["db.example.com"])
        #expect(config.ports == [6543])
        #expect(config.database == "cluster")
        #expect(config.username == "drover")
        #expect(config.password == .plain("s3cret"))
        #expect(config.connectionURI == "postgresql://drover@db.example.com/cluster")
        #expect(config.connectionTimeoutSeconds == 3)
        #expect(config.poolSize == 8)
    }

    @Test func severalHostsArePrimaryAndStandbysAndAskForTheWritableOne() async throws {
        let listed = try parse("host=db1.example.com, db2.example.com,10.0.0.3\nport=5432,5433,5434\n")
        #expect(listed.hosts == ["db1.example.com", "db2.example.com", "10.0.0.3"])
        #expect(listed.servers == ["db1.example.com:5432", "db2.example.com:5433", "10.0.0.3:5434"])
        #expect(listed.targetSessionAttributes == "read-write")
        let onePort = try parse("host=a,b\nport=6000\n")
        #expect(onePort.servers == ["a:6000", "b:6000"])
        #expect(try parse("host=a,b\ntarget_session_attrs=primary\n").targetSessionAttributes == "primary")
        #expect(try parse("host=a\ntarget_session_attrs=read-write\n").targetSessionAttributes == "read-write")

        let uri = try parse("connection-uri=postgresql://drover:pw@a.example.com:5432,b.example.com:5433,[::1]/drover?sslmode=require\n")
        #expect(uri.servers == ["a.example.com:5432", "b.example.com:5433", "[::1]:5432"])
        #expect(uri.targetSessionAttributes == "read-write")
        let asked = try parse("connection-uri=postgresql://x@a:1,b:2/d?target_session_attrs=any\n")
        #expect(asked.targetSessionAttributes == "any", "the URI's own choice stands")
        #expect(try parse("connection-uri=postgresql://x@a:1/d\n").targetSessionAttributes == nil)
        let asParameters = try parse("connection-uri=postgresql:///drover?host=db1,db2&port=5433,5434\n")
        #expect(asParameters.servers == ["db1:5433", "db2:5434"], "libpq's host and port parameters name servers too")
        #expect(asParameters.targetSessionAttributes == "read-write")
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
        ("passwd=x", 1, "unknown key 'passwd'; known keys are provider, directory, host, port, database, username, password, connection-uri, target_session_attrs, connection-timeout-seconds, pool-size, sslmode, sslrootcert"),
        ("host=a,b\nport=5432,x", 2, "'port' must be a whole number, found 'x' in '5432,x' (one port, or one per host)"),
        ("host=a,b\nport=5432,70000", 2, "'port' must be from 1 to 65535, found 70000 in '5432,70000' (one port, or one per host)"),
        ("host=a,b,c\nport=1,2", 2, "'port' names 2 ports for 3 hosts; give one port for every host, or one per host in the same order"),
        ("host=a,,b", 1, "'host' has an empty name in 'a,,b'; give host names separated by commas (e.g. db1.example.com,db2.example.com)"),
        ("host=a,b\ntarget_session_attrs=standby", 2, "target_session_attrs must be one of read-write, primary, any, found 'standby' (the registry writes, so it needs the primary; read-write is the default when several hosts are named)"),
        ("connection-uri=postgresql://x@a,b/d?target_session_attrs=read-only", 1, "in 'connection-uri': target_session_attrs must be one of read-write, primary, any, found 'read-only' (the registry writes, so it needs the primary; read-write is the default when several hosts are named)"),
    ])
    func rejectsBadInput(text: String, line: Int, message: String) {
        #expect(throws: ConfigurationError(file: "/etc/drover/database.conf", line: line, message)) { try parse(text) }
    }
}

import DroverKernel
import Testing

@Suite struct LoadBalancerConfigurationTests {
    func parse(_ text: String, pluginKeys: [String] = []) throws(ConfigurationError) -> LoadBalancerConfiguration {
        try LoadBalancerConfiguration(parsing: text, path: "/etc/drover/load-balancer", baseDirectory: "/etc/drover", pluginKeys: pluginKeys)
    }

    @Test func emptyFileTakesEveryDefault() async throws {
        let config = try parse("")
        #expect(config.balancer == "sessions")
        #expect(config.wwwHostName == nil)
        #expect(config.timeout == 10)
        #expect(config.verifySSLCerts == true)
        #expect(config.diagnostics == nil)
        #expect(config.diagnosticsFile == "/tmp/drover-load-balancer-diagnostics")
        #expect(config.heartbeatInterval == 5)
        #expect(config.maxSessionsPerNode == 0)
        #expect(config.warnings.isEmpty)
    }

    @Test func readsEveryKey() async throws {
        let config = try parse("""
            balancer=system-load
            www-host-name=server1.example.com
            timeout=0
            verify-ssl-certs=0
            diagnostics=tmp
            diagnostics-file=diag/lb.log
            heartbeat-interval=2
            max-sessions-per-node=40
            """)
        #expect(config.maxSessionsPerNode == 40)
        #expect(config.balancer == "system-load")
        #expect(config.wwwHostName == "server1.example.com")
        #expect(config.timeout == 0)
        #expect(config.verifySSLCerts == false)
        #expect(config.diagnostics == "tmp")
        #expect(config.diagnosticsFile == "/etc/drover/diag/lb.log")
        #expect(config.heartbeatInterval == 2)
        #expect(config.source.lines["heartbeat-interval"] == 7)
    }

    @Test func sslCAFileMustBeReadable() async throws {
        #expect(try parse("").sslCAFile == nil)
        #expect(try parse("ssl-ca-file=/etc/ssl/certs/ca-certificates.crt\n").sslCAFile == "/etc/ssl/certs/ca-certificates.crt")
        #expect(throws: ConfigurationError(file: "/etc/drover/load-balancer", line: 1,
            "ssl-ca-file /etc/drover/private-ca.pem cannot be read; give the PEM file of the CA that signed the nodes' certificates")) {
            try parse("ssl-ca-file=private-ca.pem\n")
        }
    }

    @Test func legacyFormIsAcceptedAndNodesAreIgnoredWithAWarning() async throws {
        // The seed's form: bare host names under [nodes], one per line.
        let config = try parse("[config]\nbalancer=sessions\ntimeout=5\n[nodes]\nserver1.example.com\nserver2.example.com\nserver3=1\n")
        #expect(config.timeout == 5)
        #expect(config.warnings.count == 1)
        #expect(config.warnings[0].contains("[nodes] section is ignored (3 entries)"))
        #expect(config.warnings[0].contains("www-host-name"))
    }

    @Test func legacyConfigSectionAloneWarnsAboutTheHeader() async throws {
        let config = try parse("[config]\nverify-ssl-certs=0\n")
        #expect(config.verifySSLCerts == false)
        #expect(config.warnings == ["/etc/drover/load-balancer: the [config] section header is the legacy form; remove it"])
    }

    @Test func keyOutsideSectionInLegacyFormIsAnError() {
        #expect(throws: ConfigurationError(file: "/etc/drover/load-balancer", line: 1, "'timeout' is outside any section; move it under [config]")) {
            try parse("timeout=3\n[config]\nbalancer=sessions\n")
        }
    }

    @Test(arguments: [
        ("color=blue", 1, "unknown key 'color'; known keys are balancer, www-host-name, timeout, verify-ssl-certs, diagnostics, diagnostics-file, heartbeat-interval, ssl-ca-file, max-sessions-per-node"),
        ("max-sessions-per-node=-3", 1, "'max-sessions-per-node' must be from 0 to 1000000, found -3"),
        ("timeout=ten", 1, "'timeout' must be a whole number, found 'ten'"),
        ("timeout=-1", 1, "'timeout' must be from 0 to 3600, found -1"),
        ("heartbeat-interval=0", 1, "'heartbeat-interval' must be from 1 to 3600, found 0"),
        ("heartbeat-interval=-5", 1, "'heartbeat-interval' must be from 1 to 3600, found -5"),
        ("verify-ssl-certs=maybe", 1, "'verify-ssl-certs' must be 0 or 1, found 'maybe'"),
        ("\nbalancer=", 2, "'balancer' has an empty value; give it a value or remove the line"),
        ("timeout=1\ntimeout=2", 2, "duplicate key 'timeout' (first set on line 1); keep one"),
    ])
    func rejectsBadInput(text: String, line: Int, message: String) {
        #expect(throws: ConfigurationError(file: "/etc/drover/load-balancer", line: line, message)) { try parse(text) }
    }

    @Test func pluginKeysAreAcceptedAndKeptWithTheirLine() async throws {
        let config = try parse("balancer=user-hash\nuser-hash-balance-factor=1.25\n", pluginKeys: ["user-hash-balance-factor"])
        #expect(config.pluginSettings["user-hash-balance-factor"] == "1.25")
        #expect(config.pluginSettings.error("user-hash-balance-factor", "bad").description == "/etc/drover/load-balancer:2: bad")
        #expect(throws: ConfigurationError.self) { try parse("user-hash-balance-factor=1.25\n") }
    }
}

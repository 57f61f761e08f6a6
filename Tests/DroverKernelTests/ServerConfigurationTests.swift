import DroverKernel
import Testing

@Suite struct ServerConfigurationTests {
    func parse(_ text: String) throws(ConfigurationError) -> ServerConfiguration {
        try ServerConfiguration(parsing: text, path: "/etc/drover/rserver.conf", baseDirectory: "/etc/drover")
    }

    @Test func defaults() async throws {
        let config = try parse("")
        #expect(config.wwwAddress == "0.0.0.0")
        #expect(config.wwwPort == 8787)
        #expect(config.secureCookieKeyFile == nil)
        #expect(config.sharedStoragePath == nil)
        #expect(config.dataDirectory == "/var/lib/drover")
        #expect(config.sslEnabled == false)
        #expect(config.sslCertificate == nil)
        #expect(config.sslCertificateKey == nil)
        #expect(config.sessionCommand == nil)
        #expect(config.sessionResponseTimeout == 60)
        #expect(config.authNone == false)
        #expect(config.authPAMService == "drover")
        #expect(config.authMinimumUserID == 1000)
        #expect(config.headerTimeout == 30)
        #expect(config.keepAliveTimeout == 75)
        #expect(config.maxConnections == 4096)
        #expect(config.authNoneOnNetwork == false)
        #expect(config.maxSessionsPerUser == 0)
        #expect(config.sessionTimeoutMinutes == 0)
    }

    @Test func readsEveryKeyAndResolvesRelativePaths() async throws {
        let config = try parse("""
            www-address=127.0.0.2
            www-port=9000
            secure-cookie-key-file=/mnt/drover/secure-cookie-key
            server-shared-storage-path=shared
            server-data-dir=../data
            ssl-enabled=1
            ssl-certificate=tls/cert.pem
            ssl-certificate-key=tls/key.pem
            session-command=/usr/bin/drover-demo-session --quiet
            session-response-timeout=600
            max-starting-sessions=16
            auth-none=1
            auth-pam-service=login
            auth-minimum-user-id=500
            www-header-timeout=10
            www-keep-alive-timeout=20
            www-max-connections=100
            max-sessions-per-user=3
            session-timeout-minutes=0.5
            """)
        #expect(config.maxSessionsPerUser == 3)
        #expect(config.sessionTimeoutMinutes == 0.5)
        #expect(config.authMinimumUserID == 500)
        #expect(config.headerTimeout == 10)
        #expect(config.keepAliveTimeout == 20)
        #expect(config.maxConnections == 100)
        #expect(config.wwwAddress == "127.0.0.2")
        #expect(config.wwwPort == 9000)
        #expect(config.secureCookieKeyFile == "/mnt/drover/secure-cookie-key")
        #expect(config.sharedStoragePath == "/etc/drover/shared")
        #expect(config.dataDirectory == "/etc/drover/../data")
        #expect(config.sslEnabled)
        #expect(config.sslCertificate == "/etc/drover/tls/cert.pem")
        #expect(config.sslCertificateKey == "/etc/drover/tls/key.pem")
        #expect(config.sessionCommand == "/usr/bin/drover-demo-session --quiet")
        #expect(config.sessionResponseTimeout == 600)
        #expect(config.maxStartingSessions == 16)
        #expect(config.authNone)
        #expect(config.authPAMService == "login")
    }

    /// Issue 37: sessions at their own origins.
    @Test func sessionOriginsAreReadWithTheirMainHostAndCertificate() throws {
        #expect(try parse("").sessionDomain == nil)
        #expect(try parse("").sharedOriginWarning?.contains("www-session-domain is unset") == true, "PAM sign-in, sessions on Drover's origin")
        #expect(try parse("www-address=127.0.0.1\nauth-none=1").sharedOriginWarning == nil, "auth-none: one user, nothing to protect from another")
        let config = try parse("www-session-domain=Sessions.Example-Sessions.com.\nwww-main-host=Drover.Example.com\nssl-enabled=1\n"
                               + "ssl-certificate=c.pem\nssl-certificate-key=c.key\nssl-session-certificate=w.pem\nssl-session-certificate-key=w.key")
        #expect(config.sessionDomain == "sessions.example-sessions.com")
        #expect(config.mainHost == "drover.example.com")
        #expect(config.sslSessionCertificate == "/etc/drover/w.pem" && config.sslSessionCertificateKey == "/etc/drover/w.key")
        #expect(config.sharedOriginWarning == nil)
        // The quick start's `<id>.localhost`: Drover's own pages at localhost.
        let local = try parse("www-address=127.0.0.1\nauth-none=1\nwww-session-domain=localhost")
        #expect(local.sessionDomain == "localhost" && local.mainHost == "localhost")
    }

    @Test func authNoneServesLoopbackAloneUnlessTheOperatorNamesTheDanger() throws {
        for address in ["127.0.0.1", "127.0.0.9", "::1", "localhost"] {
            #expect(try parse("www-address=\(address)\nauth-none=1").authNone, "\(address)")
        }
        let exposed = try parse("www-address=0.0.0.0\nauth-none=1\nauth-none-allow-anyone-on-the-network=1")
        #expect(exposed.authNone && exposed.authNoneOnNetwork)
        #expect(try parse("www-address=0.0.0.0").authNone == false, "PAM sign-in on any address is fine")
    }

    @Test(arguments: [
        ("www-port=0", 1, "'www-port' must be from 1 to 65535, found 0"),
        ("www-port=70000", 1, "'www-port' must be from 1 to 65535, found 70000"),
        ("www-port=80a", 1, "'www-port' must be a whole number, found '80a'"),
        ("auth-none=2", 1, "'auth-none' must be 0 or 1, found '2'"),
        ("session-response-timeout=0", 1, "'session-response-timeout' must be from 1 to 86400, found 0"),
        ("max-starting-sessions=0", 1, "'max-starting-sessions' must be from 1 to 100000, found 0"),
        ("ssl-enabled=1\nssl-certificate-key=k.pem", 1, "ssl-enabled=1 needs ssl-certificate=PATH (a PEM certificate chain)"),
        ("ssl-enabled=1\nssl-certificate=c.pem", 1, "ssl-enabled=1 needs ssl-certificate-key=PATH (a PEM private key)"),
        ("www-adress=1.2.3.4", 1, "unknown key 'www-adress'; known keys are www-address, www-port, secure-cookie-key-file, server-shared-storage-path, server-data-dir, ssl-enabled, ssl-certificate, ssl-certificate-key, session-command, session-response-timeout, max-starting-sessions, auth-none, auth-pam-service, www-header-timeout, www-keep-alive-timeout, www-max-connections, auth-minimum-user-id, auth-none-allow-anyone-on-the-network, www-allowed-origins, metrics-allowed-addresses, audit-retention-days, admin-group, max-sessions-per-user, session-timeout-minutes, default-session-kind, session-run-dir, www-body-timeout, www-max-connections-per-address, www-trusted-proxies, www-proxy-protocol, www-session-domain, www-main-host, ssl-session-certificate, ssl-session-certificate-key, www-secure-cookies"),
        ("www-session-domain=sessions.example.com", 1, "www-session-domain=sessions.example.com needs www-main-host=NAME, the name users reach Drover's own pages by (the front load balancer's), where a session's origin sends them to sign in"),
        ("www-session-domain=https://sessions.example.com", 1, "'www-session-domain' takes a DNS name like sessions.example.com (no scheme, port or wildcard; at most 220 characters), found 'https://sessions.example.com'"),
        ("www-session-domain=*.sessions.example.com", 1, "'www-session-domain' takes a DNS name like sessions.example.com (no scheme, port or wildcard; at most 220 characters), found '*.sessions.example.com'"),
        ("www-session-domain=sessions.example.com:8443", 1, "'www-session-domain' takes a DNS name like sessions.example.com (no scheme, port or wildcard; at most 220 characters), found 'sessions.example.com:8443'"),
        ("www-session-domain=-bad.example.com\nwww-main-host=a.example", 1, "'www-session-domain' takes a DNS name like sessions.example.com (no scheme, port or wildcard; at most 220 characters), found '-bad.example.com'"),
        ("www-session-domain=\(String(repeating: "a", count: 64)).example.com\nwww-main-host=a.example", 1, "'www-session-domain' takes a DNS name like sessions.example.com (no scheme, port or wildcard; at most 220 characters), found '\(String(repeating: "a", count: 64)).example.com'"),
        ("www-session-domain=sessions.example.com\nwww-main-host=https://drover.example.com", 2, "'www-main-host' takes the host name users reach Drover's own pages by, like drover.example.com (no scheme or port), found 'https://drover.example.com'"),
        ("www-session-domain=s.example\nwww-main-host=d.example", 1, "www-session-domain=s.example needs https, so that no session's page can set Drover's cookies (they are __Host- cookies, which browsers take over https alone): set ssl-enabled=1, or www-secure-cookies=1 behind a TLS terminator"),
        ("www-secure-cookies=1\nwww-session-domain=s.example\nwww-main-host=d.example\nssl-session-certificate=w.pem", 4, "ssl-session-certificate and ssl-session-certificate-key go together (the wildcard certificate for the sessions' origins and its key); set both or neither"),
        ("www-secure-cookies=1\nwww-session-domain=s.example\nwww-main-host=d.example\nssl-session-certificate=w.pem\nssl-session-certificate-key=w.key", 4, "ssl-session-certificate is the certificate for www-session-domain's origins over https: it needs ssl-enabled=1 and www-session-domain"),
        ("auth-none=1", 1, "auth-none=1 would let anyone who reaches www-address 0.0.0.0 act as the user running droverd; set www-address=127.0.0.1, or add auth-none-allow-anyone-on-the-network=1 if that is what you want"),
        ("www-address=10.0.0.5\nauth-none=1", 2, "auth-none=1 would let anyone who reaches www-address 10.0.0.5 act as the user running droverd; set www-address=127.0.0.1, or add auth-none-allow-anyone-on-the-network=1 if that is what you want"),
        ("www-allowed-origins=app.example.com", 1, "'www-allowed-origins' takes origins like https://app.example.com:8443 (scheme, host and port, no path), found 'app.example.com'"),
        ("www-allowed-origins=https://a.example/login", 1, "'www-allowed-origins' takes origins like https://app.example.com:8443 (scheme, host and port, no path), found 'https://a.example/login'"),
        ("www-header-timeout=0", 1, "'www-header-timeout' must be from 1 to 3600, found 0"),
        ("www-keep-alive-timeout=never", 1, "'www-keep-alive-timeout' must be a whole number, found 'never'"),
        ("www-max-connections=0", 1, "'www-max-connections' must be from 1 to 1000000, found 0"),
        ("auth-minimum-user-id=-1", 1, "'auth-minimum-user-id' must be from 0 to 2147483647, found -1"),
        ("metrics-allowed-addresses=10.0.0.1, prometheus.example", 1,
         "'metrics-allowed-addresses' takes IP addresses or networks like 10.0.0.5 or 10.0.0.0/8, found 'prometheus.example'"),
        ("max-sessions-per-user=-1", 1, "'max-sessions-per-user' must be from 0 to 100000, found -1"),
        ("max-sessions-per-user=many", 1, "'max-sessions-per-user' must be a whole number, found 'many'"),
        ("session-timeout-minutes=-2", 1, "'session-timeout-minutes' must be at least 0, found -2"),
        ("session-timeout-minutes=1h", 1, "'session-timeout-minutes' must be a number, found '1h'"),
        ("metrics-allowed-addresses=10.0.0.0/33", 1,
         "'metrics-allowed-addresses' takes IP addresses or networks like 10.0.0.5 or 10.0.0.0/8, found '10.0.0.0/33'"),
    ])
    func rejectsBadInput(text: String, line: Int, message: String) {
        #expect(throws: ConfigurationError(file: "/etc/drover/rserver.conf", line: line, message)) { try parse(text) }
    }

    /// `metrics-allowed-addresses` takes addresses and networks of both families.
    @Test func metricsAllowedAddressesTakesAddressesAndNetworks() throws {
        let good = try ServerConfiguration(parsing: "metrics-allowed-addresses=10.0.0.0/8 192.168.1.7,fd00::/8\n", path: "/etc/drover/rserver.conf", baseDirectory: "/etc/drover")
        let ranges = good.metricsAllowedAddresses
        #expect(ranges.count == 3)
        #expect(ranges[0].contains("10.200.3.4") && !ranges[0].contains("11.0.0.1") && ranges[0].contains("::ffff:10.1.1.1"))
        #expect(ranges[1].contains("192.168.1.7") && !ranges[1].contains("192.168.1.8"))
        #expect(ranges[2].contains("fd12::1") && !ranges[2].contains("fe80::1") && !ranges[2].contains("10.0.0.1"))
    }
}

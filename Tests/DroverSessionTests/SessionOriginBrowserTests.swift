import DroverKernel
import DroverTesting
import Foundation
import Testing

/// Issue 37, item 3, as it is attacked: a script in a session's page (as a notebook's output or
/// an HTML file would run it), in headless Chromium, over https with a test CA's certificates,
/// the wildcard one for the sessions' origins chosen by SNI (`ssl-session-certificate`), and
/// `--host-resolver-rules` giving `drover.test` and `*.sessions.test` the node's address.
/// With `www-session-domain`, the script can neither read `/api/me` nor create a session, nor
/// read another session or open a WebSocket into it. The same script with `www-session-domain`
/// unset does all of that: the old exposure, kept as the test that can fail.
@Suite(.serialized) struct SessionOriginBrowserTests {
    static let user = "droverso3"
    static let (domain, mainHost) = ("sessions.test", "drover.test")

    /// The script a hostile page runs (`MAIN`, `OTHER` and `OTHER_ID` filled in): what it could
    /// read and do, as JSON.
    static let hostileScript = #"""
    const done = arguments[arguments.length - 1];
    (async () => {
      const r = {};
      try { const x = await fetch(MAIN + '/api/me', {credentials: 'include'}); r.me = 'read:' + x.status + ':' + (await x.text()).slice(0, 120); }
      catch (e) { r.me = 'blocked'; }
      let csrf = '';
      try { csrf = JSON.parse(r.me.split(':').slice(2).join(':')).csrf || ''; } catch (e) {}
      try {
        const x = await fetch(MAIN + '/api/sessions', {method: 'POST', credentials: 'include', headers: csrf ? {'X-CSRF-Token': csrf} : {}});
        r.create = 'read:' + x.status;
      } catch (e) {
        // Not readable: sent blind, as a page may (the node must refuse it all the same).
        await fetch(MAIN + '/api/sessions', {method: 'POST', mode: 'no-cors', credentials: 'include'}).catch(() => {});
        r.create = 'blocked';
      }
      try { const x = await fetch(OTHER + '/s/' + OTHER_ID + '/count', {credentials: 'include'}); r.other = 'read:' + x.status + ':' + (await x.text()).slice(0, 60); }
      catch (e) { r.other = 'blocked'; }
      r.ws = await new Promise((resolve) => {
        const ws = new WebSocket(OTHER.replace('https:', 'wss:') + '/s/' + OTHER_ID + '/echo');
        ws.onopen = () => ws.send('hijacked');
        ws.onmessage = (event) => resolve('echo:' + event.data);
        ws.onerror = () => resolve('error');
        ws.onclose = (event) => resolve('closed:' + event.code);
        setTimeout(() => resolve('timeout'), 15000);
      });
      done(JSON.stringify(r));
    })();
    """#

    /// A CA, a certificate for `drover.test` and a wildcard one for `*.sessions.test`, and the
    /// SPKI hashes Chromium is told to accept (the test's CA is in no trust store).
    static func makePKI(in pki: TemporaryDirectory) async throws -> String {
        let script = """
            set -e
            cd "$1"
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj '/CN=Drover origins test CA' \\
                -keyout ca.key -out ca.pem 2>/dev/null
            make() {
                openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
                printf 'subjectAltName=DNS:%s\\n' "$2" > "$1.ext"
                openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
                openssl x509 -in "$1.pem" -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64 > "$1.spki"
            }
            make main \(mainHost)
            make sessions '*.\(domain)'
            """
        let made = try await Executable.run("/bin/sh", ["-c", script, "sh", pki.path])
        guard made.status == 0 else { throw TestFailure("openssl: \(made.stderr)") }
        return ["main", "sessions"].compactMap { pki.read("\($0).spki")?.trimmingCharacters(in: .whitespacesAndNewlines) }.joined(separator: ",")
    }

    @Test(.enabled(if: (Browser.available && SystemUsers.available) || ProcessInfo.processInfo.environment["CI"] == "true"))
    func aSessionsPageCannotScriptDroverOrAnotherSessionAtItsOwnOrigin() async throws {
        try await HeavyTests.run(.wholeMachine) { try await attack() }
    }

    func attack() async throws {
        #expect(Browser.available, "no chromedriver: scripts/test.sh installs Debian's chromium-driver package")
        try await SystemUsers.ensure([Self.user])
        let pki = TemporaryDirectory(prefix: "drover-origins-pki")
        let spki = try await Self.makePKI(in: pki)
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite,
                                            loadBalancer: TestCluster.scaledLoadBalancer + "verify-ssl-certs=0\n")
        let node = cluster.nodes[0]
        let base = try String(contentsOfFile: node.path + "/rserver.conf", encoding: .utf8) + """

            session-command=\(demoCommand)
            auth-pam-service=\(SystemUsers.pamService)
            ssl-enabled=1
            ssl-certificate=\(pki.url("main.pem"))
            ssl-certificate-key=\(pki.url("main.key"))

            """
        let origins = "www-session-domain=\(Self.domain)\nwww-main-host=\(Self.mainHost)\n"
            + "ssl-session-certificate=\(pki.url("sessions.pem"))\nssl-session-certificate-key=\(pki.url("sessions.key"))\n"
        let main = "https://\(Self.mainHost):\(node.port)"
        let arguments = ["--host-resolver-rules=MAP \(Self.mainHost) 127.0.0.1, MAP *.\(Self.domain) 127.0.0.1",
                         "--ignore-certificate-errors-spki-list=\(spki)"]

        // With session origins.
        try node.write("rserver.conf", base + origins)
        var droverd = try await start(node)
        do {
            try await Browser.using(arguments: arguments) { browser in
                try await signIn(browser, main)
                let (a, b) = (try await startSession(browser, main, index: 0), try await startSession(browser, main, index: 1))
                // B is opened first, so the browser holds B's cookie when A's page tries B.
                for id in [b, a] {
                    try await browser.open("\(main)/s/\(id)/")
                    let url = try await landed(browser, at: "https://\(id).\(Self.domain):\(node.port)/s/\(id)/")
                    #expect(url == "https://\(id).\(Self.domain):\(node.port)/s/\(id)/", "the session's page at its own origin")
                }
                let script = Self.hostileScript.replacingOccurrences(of: "MAIN", with: "'\(main)'")
                    .replacingOccurrences(of: "OTHER_ID", with: "'\(b)'").replacingOccurrences(of: "OTHER", with: "'https://\(b).\(Self.domain):\(node.port)'")
                let result = try #require(try await browser.runAsync(script, timeoutSeconds: 60) as? String)
                let found = try #require(try JSONSerialization.jsonObject(with: Data(result.utf8)) as? [String: String], "\(result)")
                #expect(found["me"] == "blocked", "a session's page read Drover's /api/me: \(result)")
                #expect(found["create"] == "blocked", "\(result)")
                #expect(found["other"] == "blocked", "a session's page read another session: \(result)")
                #expect(found["ws"] == "error" || found["ws"]?.hasPrefix("closed:") == true, "a WebSocket into another session: \(result)")
                // Nothing was created, blind or not: still two sessions.
                try await browser.open("\(main)/")
                #expect(try await browser.run("return document.querySelectorAll('tr[id^=session-]').length") as? Int == 2)
                // The main cookie is host-only under `__Host-`, and the session's page cannot read its own.
                try await browser.open("https://\(a).\(Self.domain):\(node.port)/s/\(a)/")
                _ = try await landed(browser, at: "https://\(a).\(Self.domain):\(node.port)/s/\(a)/")
                #expect(try await browser.run("return document.cookie") as? String == "", "HttpOnly: no Drover cookie is readable")
            }
        } catch {
            throw TestFailure("\(error)\n--- droverd:\n\(droverd.stderr.suffix(4000))")
        }
        #expect(droverd.stderr.contains("event=websocket-origin-refused"), "the hijack is logged")
        droverd.signal(SIGTERM)
        #expect(try await droverd.wait(timeout: 30) == 0)

        // The same page and script with www-session-domain unset: all of it works (the old exposure).
        try node.write("rserver.conf", base)
        droverd = try await start(node)
        do {
            try await Browser.using(arguments: arguments) { browser in
                try await signIn(browser, main)
                let (a, b) = (try await existingSession(browser, main, index: 0), try await existingSession(browser, main, index: 1))
                try await browser.open("\(main)/s/\(b)/")
                _ = try await landed(browser, at: "\(main)/s/\(b)/")
                try await browser.open("\(main)/s/\(a)/")
                _ = try await landed(browser, at: "\(main)/s/\(a)/")
                let script = Self.hostileScript.replacingOccurrences(of: "MAIN", with: "'\(main)'")
                    .replacingOccurrences(of: "OTHER_ID", with: "'\(b)'").replacingOccurrences(of: "OTHER", with: "'\(main)'")
                let result = try #require(try await browser.runAsync(script, timeoutSeconds: 60) as? String)
                let found = try #require(try JSONSerialization.jsonObject(with: Data(result.utf8)) as? [String: String], "\(result)")
                #expect(found["me"]?.hasPrefix("read:200:") == true && found["me"]?.contains("csrf") == true, "\(result)")
                #expect(found["create"] == "read:201", "\(result)")
                #expect(found["other"]?.hasPrefix("read:200:") == true, "\(result)")
                #expect(found["ws"] == "echo:hijacked", "\(result)")
            }
        } catch {
            throw TestFailure("\(error)\n--- droverd:\n\(droverd.stderr.suffix(4000))")
        }
        droverd.signal(SIGTERM)
        #expect(try await droverd.wait(timeout: 30) == 0)
    }

    /// Starts droverd for `node` over https (the cluster's plain-HTTP health check cannot see it).
    func start(_ node: ConfigDirectory) async throws -> RunningProcess {
        let droverd = try RunningProcess(Executable.path("droverd"), ["--config-dir", node.path])
        try await droverd.waitUntil(timeout: 60, "droverd listens") { droverd.stderr.contains("listening") }
        return droverd
    }

    func signIn(_ browser: Browser, _ main: String) async throws {
        try await browser.signIn(at: main, user: Self.user)
    }

    /// Starts a session from the home page, as its form's own request would (with the CSRF
    /// token; awaited whole: a form's submission could be cut short by the next navigation
    /// under load): the id of the `index`th listed.
    func startSession(_ browser: Browser, _ main: String, index: Int) async throws -> String {
        try await browser.open(main + "/")
        let created = try await browser.runAsync(#"""
            const done = arguments[arguments.length - 1];
            fetch('/api/me').then(r => r.json()).then(me => fetch('/api/sessions', {method: 'POST', headers: {'X-CSRF-Token': me.csrf}}))
              .then(r => r.json()).then(s => done(s.id || JSON.stringify(s))).catch(e => done('error: ' + e));
            """#, timeoutSeconds: 120) as? String
        #expect(created.map(SessionOriginBrowserTests.isID) == true, "\(created ?? "nil")")
        return try await existingSession(browser, main, index: index)
    }

    static func isID(_ text: String) -> Bool { text.count == 32 && text.allSatisfy(\.isHexDigit) }

    func existingSession(_ browser: Browser, _ main: String, index: Int) async throws -> String {
        try await eventuallyValue("session \(index) is listed") {
            try await browser.open(main + "/")
            let ids = try await browser.run("return Array.from(document.querySelectorAll('tr[id^=session-]')).map(r => r.id.slice(8))") as? [String] ?? []
            return ids.count > index ? ids[index] : nil
        }
    }

    /// Waits until the page is `url` and loaded; returns where the browser is.
    func landed(_ browser: Browser, at url: String) async throws -> String {
        try await eventuallyValue("the browser lands at \(url)") {
            let here = try await browser.run("return document.readyState === 'complete' ? location.href : null") as? String
            return here == url ? here : nil
        }
    }

}

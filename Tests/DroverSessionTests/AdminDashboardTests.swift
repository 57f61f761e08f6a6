import DroverKernel
import DroverTesting
import Foundation
import Testing

/// A real browser (headless Chromium) driven over WebDriver (`chromedriver`, Debian's
/// chromium-driver package, which scripts/test.sh installs).
struct Browser {
    let driver: RunningProcess
    let port: Int
    let session: String

    static var available: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/chromedriver") }

    /// - Parameter arguments: Chromium's own, besides the headless defaults (say
    ///   `--host-resolver-rules=…` to give test names loopback addresses).
    static func start(arguments: [String] = []) async throws -> Browser {
        let port = try FreePort.find()
        let driver = try RunningProcess("/usr/bin/chromedriver", ["--port=\(port)"])
        let args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--window-size=1280,900"] + arguments
        let argsJSON = String(decoding: try JSONSerialization.data(withJSONObject: args), as: UTF8.self)
        let capabilities = #"{"capabilities":{"alwaysMatch":{"browserName":"chrome","goog:chromeOptions":{"binary":"/usr/bin/chromium","#
            + #""args":"# + argsJSON + "}}}}"
        for _ in 0..<100 {
            if let answer = try? await RawHTTPClient.request("POST", host: "127.0.0.1", port: port, path: "/session",
                                                             headers: [("Content-Type", "application/json")], body: capabilities, timeout: 60),
               let value = (json(answer)["value"] as? [String: Any]), let session = value["sessionId"] as? String {
                return Browser(driver: driver, port: port, session: session)
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        driver.signal(SIGKILL)
        throw TestFailure("chromedriver did not start a browser: \(driver.stderr.suffix(500))")
    }

    @discardableResult
    func call(_ method: String, _ path: String, _ body: String = "{}") async throws -> Any? {
        let answer = try await RawHTTPClient.request(method, host: "127.0.0.1", port: port, path: "/session/\(session)\(path)",
                                                     headers: [("Content-Type", "application/json")], body: method == "GET" ? "" : body, timeout: 60)
        guard answer.status == 200 else { throw TestFailure("WebDriver \(method) \(path): \(answer.status) \(answer.body.prefix(300))") }
        return json(answer)["value"]
    }

    func open(_ url: String) async throws {
        try await call("POST", "/url", #"{"url":"\#(url)"}"#)
    }

    var source: String {
        get async throws { try await call("GET", "/source") as? String ?? "" }
    }

    /// Clicks the element `css` finds (again, should the page's refresh replace it meanwhile).
    func click(_ css: String) async throws {
        var last: (any Error)?
        for _ in 0..<5 {
            do {
                let found = try await call("POST", "/element", #"{"using":"css selector","value":"\#(css.replacingOccurrences(of: "\"", with: "\\\""))"}"#)
                guard let element = (found as? [String: Any])?.values.first as? String else { throw TestFailure("no element for \(css)") }
                try await call("POST", "/element/\(element)/click")
                return
            } catch {
                last = error
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        throw last ?? TestFailure("cannot click \(css)")
    }

    /// Signs `user` in through the home page's form at `base` (`scheme://host:port`) and waits
    /// for the page that says so.
    func signIn(at base: String, user: String, password: String = SystemUsers.password) async throws {
        try await open(base + "/")
        try await type("input[name=username]", user)
        try await type("input[name=password]", password)
        try await click("form[action='/sign-in'] button")
        _ = try await eventuallyValue("signed in at \(base)") { (try await source).contains("Signed in as") ? true : nil }
    }

    /// Writes a PNG of the page to `path`.
    func screenshot(to path: String) async throws {
        let base64 = try #require(try await call("GET", "/screenshot") as? String)
        try #require(Data(base64Encoded: base64)).write(to: URL(fileURLWithPath: path))
    }

    /// Runs `body` with a browser, which is closed afterwards whatever happens (a browser left
    /// behind by a failed test would run on beside the rest of the suite).
    static func using(arguments: [String] = [], _ body: (Browser) async throws -> Void) async throws {
        let browser = try await start(arguments: arguments)
        do {
            try await body(browser)
        } catch {
            await browser.quit()
            throw error
        }
        await browser.quit()
    }

    func quit() async {
        _ = try? await RawHTTPClient.request("DELETE", host: "127.0.0.1", port: port, path: "/session/\(session)", timeout: 30)
        driver.signal(SIGTERM)
    }
}

@Suite(.serialized) struct AdminDashboardTests {
    @Test(.enabled(if: Browser.available || ProcessInfo.processInfo.environment["CI"] == "true"))
    func anAdminSeesTheClusterAndActsOnItFromARealBrowser() async throws {
        try await HeavyTests.run(.cores(0.8)) {
            #expect(Browser.available, "no chromedriver: scripts/test.sh installs Debian's chromium-driver package")
            let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2"], backend: .sqlite,
                                                rserver: "session-command=\(demoCommand)\nauth-none=1\n")
            for index in 0..<2 { try await cluster.start(index) }
            let ids = try await cluster.statuses().reduce(into: [String: Int64]()) { $0[$1.host] = $1.id }
            let via = cluster.nodes[0]
            var sessions: [String] = []
            for _ in 0..<2 {
                let created = try await RawHTTPClient.request("POST", host: via.address, port: via.port, path: "/api/sessions")
                sessions.append(try #require(json(created)["id"] as? String))
            }
            try await Browser.using { browser in try await act(browser, cluster: cluster, ids: ids, sessions: sessions) }
            for index in 0..<2 { #expect(try await cluster.stop(index) == 0) }
        }
    }

    /// What the admin does in the browser, and what it must cause.
    func act(_ browser: Browser, cluster: TestCluster, ids: [String: Int64], sessions: [String]) async throws {
        let via = cluster.nodes[0]
        try await browser.open("http://\(via.address):\(via.port)/admin")
        let page = try await browser.source
        #expect(page.contains("Drover cluster") && sessions.allSatisfy { page.contains($0.prefix(8)) }, "\(page.prefix(2000))")
        #expect(page.contains("node-\(ids[cluster.nodes[1].address]!)"), "every node listed")
        let shots = ProcessInfo.processInfo.environment["DROVER_TEST_LOG_DIR"] ?? NSTemporaryDirectory()
        try await browser.screenshot(to: shots + "/admin-dashboard.png")
        print("admin dashboard screenshot: \(shots)/admin-dashboard.png")

        // Suspend the first session with its button.
        try await browser.click("form[action=\"/admin/sessions/\(sessions[0])/suspend\"] button")
        try await cluster.eventually("the session suspended", timeout: 30) { try await listedSessions(via)[sessions[0]]?.state == "suspended" }

        // Move the second one to the other node with its menu.
        let from = try #require(try await listedSessions(via)[sessions[1]]?.node)
        let to = try #require(ids.values.first { $0 != from })
        try await browser.click("form[action=\"/admin/sessions/\(sessions[1])/move\"] option[value=\"\(to)\"]")
        try await browser.click("form[action=\"/admin/sessions/\(sessions[1])/move\"] button")
        try await cluster.eventually("the session running on node \(to)", timeout: 30) {
            let row = try await listedSessions(via)[sessions[1]]
            return row?.state == "running" && row?.node == to
        }
        #expect(count(try await RawHTTPClient.request(host: via.address, port: via.port, path: "/s/\(sessions[1])/count")) == 0)

        // Take the other node out of placement (through a signed call to it), and back.
        let other = ids[cluster.nodes[1].address]!
        try await browser.click("form[action=\"/admin/nodes/\(other)/offline\"] button")
        try await cluster.eventually("node \(other) in offline mode") { try await cluster.statuses().first { $0.id == other }?.status == "Offline mode" }
        try await browser.click("form[action=\"/admin/nodes/\(other)/online\"] button")
        try await cluster.eventually("node \(other) online") { try await cluster.statuses().first { $0.id == other }?.status == "Online" }
        // Drain the node the session was moved to: out of placement, and the session comes back,
        // running.
        try await browser.click("form[action=\"/admin/nodes/\(to)/drain\"] button")
        try await cluster.eventually("node \(to) drained", timeout: 30) {
            let row = try await listedSessions(via)[sessions[1]]
            return row?.state == "running" && row?.node == from
        }
        #expect(try await cluster.statuses().first { $0.id == to }?.status == "Offline mode")
        #expect(count(try await RawHTTPClient.request(host: via.address, port: via.port, path: "/s/\(sessions[1])/count")) == 0)

        // Each action is in the audit log as the admin's.
        try await Task.sleep(for: .seconds(1.2))
        let audit = try await cluster.drover(0, ["audit"])
        let admin = "admin:" + SystemUsers.currentName
        for action in ["session-suspend  \(sessions[0])", "session-move  \(sessions[1])", "node-offline  node \(other)", "node-online  node \(other)"] {
            #expect(audit.stdout.contains("\(admin)  \(action)"), "\(action) missing from:\n\(audit.stdout)")
        }
        // A form posted without the token is refused.
        let forged = try await RawHTTPClient.request("POST", host: via.address, port: via.port, path: "/admin/sessions/\(sessions[1])/quit",
                                                     headers: [("Origin", "http://evil.example"), ("Content-Type", "application/x-www-form-urlencoded")])
        #expect(forged.status == 403)
    }

    /// With PAM sign-in, only members of admin-group reach the dashboard.
    @Test(.enabled(if: SystemUsers.available))
    func onlyMembersOfTheAdminGroupMayUseIt() async throws {
        try await SystemUsers.ensure(["drovertest1", "drovertest2"])
        _ = try await Executable.run("/usr/sbin/groupadd", ["-f", "droveradmins"])
        #expect(try await Executable.run("/usr/sbin/usermod", ["-aG", "droveradmins", "drovertest2"]).status == 0)
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite,
                                            rserver: "session-command=\(demoCommand)\nauth-pam-service=\(SystemUsers.pamService)\nadmin-group=droveradmins\n")
        try await cluster.start(0)
        let node = cluster.nodes[0]
        let user = try await signIn(node, user: "drovertest1")
        let admin = try await signIn(node, user: "drovertest2")
        let refused = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/admin", headers: user.headers)
        #expect(refused.status == 403 && refused.body.contains("admin-group (droveradmins)"), "\(refused.status) \(refused.body)")
        let shown = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/admin", headers: admin.headers)
        #expect(shown.status == 200 && shown.body.contains("Drover cluster"))
        // PAM sign-in with sessions on Drover's origin: the operator is warned (issue 37, item 7).
        #expect(shown.body.contains(#"id="origin-warning""#) && shown.body.contains("www-session-domain is unset"))
        let anonymous = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/admin")
        #expect(anonymous.status == 303, "sent to sign in")
        #expect(try await cluster.stop(0) == 0)
    }
}

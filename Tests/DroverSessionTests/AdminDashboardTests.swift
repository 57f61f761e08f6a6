import DroverKernel
import DroverTesting
import Foundation
import Testing

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

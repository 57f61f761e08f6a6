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
        // Chromium's own output and chromedriver's warnings, for a failure to show. Not its
        // INFO log: that holds every command, the text typed into a password field included,
        // which scripts/test.sh's scan for secrets in process outputs refuses.
        let driver = try RunningProcess("/usr/bin/chromedriver", ["--port=\(port)", "--log-level=WARNING", "--enable-chrome-logs"])
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

    /// - Parameter timeout: how long chromedriver may take to answer (past any timeout of its own).
    @discardableResult
    func call(_ method: String, _ path: String, _ body: String = "{}", timeout: TimeInterval = 60) async throws -> Any? {
        let answer = try await RawHTTPClient.request(method, host: "127.0.0.1", port: port, path: "/session/\(session)\(path)",
                                                     headers: [("Content-Type", "application/json")], body: method == "GET" ? "" : body, timeout: timeout)
        guard answer.status == 200 else { throw TestFailure("WebDriver \(method) \(path): \(answer.status) \(answer.body.prefix(300))") }
        return json(answer)["value"]
    }

    /// The WebDriver id of the element `css` finds.
    func element(_ css: String) async throws -> String {
        let found = try await call("POST", "/element", #"{"using":"css selector","value":"\#(css.replacingOccurrences(of: "\"", with: "\\\""))"}"#)
        guard let element = (found as? [String: Any])?.values.first as? String else { throw TestFailure("no element for \(css)") }
        return element
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
                try await call("POST", "/element/\(try await element(css))/click")
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
    /// behind by a failed test would run on beside the rest of the suite). An error `body` throws
    /// (which names the WebDriver command that failed or timed out) comes with the end of
    /// Chromium's output and chromedriver's warnings: what the browser said meanwhile.
    static func using(arguments: [String] = [], _ body: (Browser) async throws -> Void) async throws {
        let browser = try await start(arguments: arguments)
        do {
            try await body(browser)
        } catch {
            await browser.quit()
            throw TestFailure("\(error)\n--- Chromium's output and chromedriver's warnings, the end:\n\(browser.driver.stderr.suffix(6000))")
        }
        await browser.quit()
    }

    func quit() async {
        _ = try? await RawHTTPClient.request("DELETE", host: "127.0.0.1", port: port, path: "/session/\(session)", timeout: 30)
        driver.signal(SIGTERM)
    }

    /// Types `text` into the element `css` finds.
    func type(_ css: String, _ text: String) async throws {
        let body = try JSONSerialization.data(withJSONObject: ["text": text])
        try await call("POST", "/element/\(try await element(css))/value", String(decoding: body, as: UTF8.self))
    }

    /// Runs `script` in the page; it calls `arguments[0]` with its result. Past `timeoutSeconds`
    /// chromedriver answers with a script timeout, which is thrown.
    func runAsync(_ script: String, timeoutSeconds: Int = 120) async throws -> Any? {
        try await call("POST", "/timeouts", #"{"script":\#(timeoutSeconds * 1000)}"#)
        let body = try JSONSerialization.data(withJSONObject: ["script": script, "args": [] as [Any]])
        return try await call("POST", "/execute/async", String(decoding: body, as: UTF8.self), timeout: TimeInterval(timeoutSeconds + 30))
    }

    /// Runs `script` in the page and returns what it returns.
    @discardableResult
    func run(_ script: String) async throws -> Any? {
        let body = try JSONSerialization.data(withJSONObject: ["script": script, "args": [] as [Any]])
        return try await call("POST", "/execute/sync", String(decoding: body, as: UTF8.self))
    }
}

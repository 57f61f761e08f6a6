import DroverKernel
import DroverTesting
import Foundation
import Testing

/// The acceptance test of issue 33: JupyterLab from PyPI, started through its shipped kind, on a
/// two-node cluster, used from a real browser (headless Chromium over WebDriver) as a person
/// would: sign in, pick the kind, open the Lab, start a kernel with Jupyter's own XSRF cookie and
/// header, run a cell over the kernel's WebSocket from the page's own origin, through either
/// node; a saved notebook survives a suspend and a resume on the other node; a second real
/// account reaches nothing; a planted socket is refused.
@Suite(.serialized) struct JupyterLabTests {
    static var jupyterBin: String? { ProcessInfo.processInfo.environment["DROVER_TEST_JUPYTER_BIN"] }
    static let (owner, stranger) = ("droverjl1", "droverjl2")

    /// In the Lab page: starts a kernel over the REST API with the `_xsrf` cookie as
    /// `X-XSRFToken` (and shows a POST without it is refused), runs `print(6*7)` over the
    /// kernel's WebSocket, saves a notebook. Reports `output:42 refused:403 saved:201` or what failed.
    static let kernelScript = #"""
    const done = arguments[arguments.length - 1];
    (async () => {
      try {
        // How often this pass's script ran in this tab, and what the page was when it ran: kept
        // for a failure's message (WebDriver runs a script again when its page navigates away).
        const runs = Number(sessionStorage.getItem('droverRuns') || 0) + 1;
        sessionStorage.setItem('droverRuns', String(runs));
        sessionStorage.setItem('droverPages', (sessionStorage.getItem('droverPages') || '') + ' ' + location.href + ' (' + ((performance.getEntriesByType('navigation')[0] || {}).type || '?') + ')');
        window.addEventListener('pagehide', () => sessionStorage.setItem('droverPages', sessionStorage.getItem('droverPages') + ' left at ' + new Date().toISOString()));
        const base = location.pathname.slice(0, location.pathname.indexOf('/lab')) + '/';
        const xsrf = decodeURIComponent((document.cookie.split('; ').find(c => c.startsWith('_xsrf=')) || '=').split('=').slice(1).join('='));
        const refused = await fetch(base + 'api/kernels', {method: 'POST', body: '{"name":"python3"}'});
        const made = await fetch(base + 'api/kernels', {method: 'POST', headers: {'X-XSRFToken': xsrf, 'Content-Type': 'application/json'}, body: '{"name":"python3"}'});
        if (made.status !== 201) { done('kernel start: ' + made.status + ' ' + await made.text()); return; }
        const kernel = await made.json();
        const notebook = {type: 'notebook', format: 'json', content: {cells: [{cell_type: 'code', source: 'answer = 6*7  # drover acceptance', metadata: {}, outputs: [], execution_count: null}], metadata: {}, nbformat: 4, nbformat_minor: 5}};
        // Whether the notebook was there before it is saved: kept for a failure's message.
        window.droverFoundBefore = (await fetch(base + 'api/contents/drover-acceptance.ipynb?content=0')).status;
        const saved = await fetch(base + 'api/contents/drover-acceptance.ipynb', {method: 'PUT', headers: {'X-XSRFToken': xsrf, 'Content-Type': 'application/json'}, body: JSON.stringify(notebook)});
        const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + base + 'api/kernels/' + kernel.id + '/channels');
        const msgId = 'drover-' + Math.random();
        ws.onopen = () => ws.send(JSON.stringify({
          header: {msg_id: msgId, msg_type: 'execute_request', username: 'drover', session: 'drover-' + Math.random(), date: new Date().toISOString(), version: '5.3'},
          parent_header: {}, metadata: {}, channel: 'shell', buffers: [],
          content: {code: 'print(6*7)', silent: false, store_history: false, user_expressions: {}, allow_stdin: false, stop_on_error: true}}));
        ws.onmessage = (event) => {
          const message = JSON.parse(event.data);
          if (message.parent_header && message.parent_header.msg_id === msgId && message.msg_type === 'stream') {
            ws.close();
            done('output:' + message.content.text.trim() + ' refused:' + refused.status + ' saved:' + saved.status);
          }
        };
        ws.onerror = () => done('websocket error');
        setTimeout(() => done('no output within 90 s'), 90000);
      } catch (error) { done('error: ' + error); }
    })();
    """#

    @Test(.enabled(if: (jupyterBin != nil && Browser.available && SystemUsers.available) || ProcessInfo.processInfo.environment["CI"] == "true"))
    func jupyterLabThroughBothNodesInARealBrowser() async throws {
        try await HeavyTests.run(.cores(0.8)) { try await lab() }
    }

    func lab() async throws {
        let bin = try #require(Self.jupyterBin, "no JupyterLab: scripts/test.sh installs it from PyPI and sets DROVER_TEST_JUPYTER_BIN")
        #expect(Browser.available, "no chromedriver: scripts/test.sh installs Debian's chromium-driver package")
        try await SystemUsers.ensure([Self.owner, Self.stranger])
        let account = try #require(SystemUsers.account(Self.owner))
        let profile = try Self.putOnPath(bin, for: account)
        // What an earlier run saved.
        _ = try? FileManager.default.removeItem(atPath: account.home + "/drover-acceptance.ipynb")

        let shipped = Self.shippedKind("jupyterlab")
        let run = TemporaryDirectory(prefix: "drover-lab-run")
        chmod(run.path, 0o755)
        let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2"], backend: .sqlite, rserver: """
            session-command=\(demoCommand)
            auth-pam-service=\(SystemUsers.pamService)
            """)
        for (index, node) in cluster.nodes.enumerated() {
            let rserver = try String(contentsOfFile: node.path + "/rserver.conf", encoding: .utf8)
            try node.write("rserver.conf", rserver + "\nsession-run-dir=\(run.path)/node\(index)\n")
            try node.write("kinds/jupyterlab.conf", try String(contentsOfFile: shipped, encoding: .utf8))
        }
        try await cluster.start(0)
        try await cluster.start(1)
        let nodeIDs = try await cluster.statuses().reduce(into: [Int64: Int]()) { map, row in
            map[row.id] = cluster.nodes.firstIndex { $0.address == row.host }
        }

        try await Browser.using { browser in
            // Sign in on node 0 and start a JupyterLab session from the home page's picker.
            let first = cluster.nodes[0]
            try await signInThroughTheForm(browser, first)
            try await browser.run("document.querySelector('select[name=kind]').value = 'jupyterlab'")
            try await browser.click("form[action='/sessions'] button")
            let id = try await eventuallyValue("the session is listed") {
                (try await browser.run("const a = document.querySelector('a[href^=\"/s/\"]'); return a ? a.getAttribute('href') : null") as? String)
                    .map { String($0.dropFirst(3).dropLast()) }
            }
            let visitor = try await signIn(first, user: Self.owner)
            let row = try #require(try await Self.listed(first, visitor)[id], "session \(id) is listed")
            #expect(try await RawHTTPClient.request(host: first.address, port: first.port, path: "/api/sessions", headers: visitor.headers)
                        .body.contains(#""kind":"jupyterlab""#))
            let ownerIndex = try #require(row.node.flatMap { nodeIDs[$0] })
            let otherIndex = 1 - ownerIndex

            // Through the owning node and through the other one.
            for index in [ownerIndex, otherIndex] {
                let node = cluster.nodes[index]
                if index != 0 { try await signInThroughTheForm(browser, node) }
                try await openLab(browser, node, id)
                let (result, trace) = try await runKernelScript(browser)
                if let folder = ProcessInfo.processInfo.environment["DROVER_TEST_SCREENSHOTS"] {
                    try await browser.screenshot(to: folder + "/jupyterlab-node\(index).png")
                }
                #expect(result == "output:42 refused:403 saved:\(index == ownerIndex ? 201 : 200)", "through node \(index): \(result ?? "nil") (\(trace))")
            }

            // The second account reaches nothing: not through the proxy, not the socket.
            let strangerVisitor = try await signIn(first, user: Self.stranger)
            #expect(try await RawHTTPClient.request(host: first.address, port: first.port, path: "/s/\(id)/lab", headers: strangerVisitor.headers).status == 404)
            let socket = run.path + "/node\(ownerIndex)/\(id)/http.sock"
            let direct = try await SessionKindTests.asUser(Self.stranger, ["/usr/bin/python3", "-c", SessionKindTests.connectAsUser, socket])
            #expect(direct.stdout.hasPrefix("refused 13"), "\(direct.stdout)")

            // The session plants another listener at its socket's path: refused, then put back.
            let open = TemporaryDirectory(prefix: "drover-open")
            chmod(open.path, 0o777)
            let stranger = try #require(SystemUsers.account(Self.stranger))
            let planted = try RunningProcess("/usr/bin/setpriv", ["--reuid=\(stranger.uid)", "--regid=\(stranger.gid)", "--init-groups", "--",
                                                                "/usr/bin/python3", "-c", "import os,socket,sys,time\ns=socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1])\nos.chmod(sys.argv[1],0o777)\ns.listen(8)\nwhile True: s.accept()[0].sendall(b'HTTP/1.1 200 OK\\r\\nContent-Length: 7\\r\\n\\r\\nplanted')",
                                                                open.url("planted.sock")])
            defer { planted.signal(SIGKILL) }
            try await cluster.eventually("the planted listener") { FileManager.default.fileExists(atPath: open.url("planted.sock")) }
            #expect(try await SessionKindTests.asUser(Self.owner, ["/bin/sh", "-c", "mv '\(socket)' '\(socket).real' && ln -s '\(open.url("planted.sock"))' '\(socket)'"]).status == 0)
            let refused = try await RawHTTPClient.request(host: first.address, port: first.port, path: "/s/\(id)/api/status", headers: visitor.headers, timeout: 30)
            #expect(refused.status == 502 && !refused.body.contains("planted"), "\(refused.status) \(refused.body)")
            #expect(try await SessionKindTests.asUser(Self.owner, ["/bin/sh", "-c", "rm '\(socket)' && mv '\(socket).real' '\(socket)'"]).status == 0)
            #expect(try await RawHTTPClient.request(host: first.address, port: first.port, path: "/s/\(id)/api/status", headers: visitor.headers, timeout: 30).status == 200)

            // Suspended, its node taken out of placement, resumed on the other: the notebook is there.
            // The Lab's tab is closed first: it polls the server every few seconds, and a request
            // for a suspended session resumes it at once, wherever the balancer places it.
            try await browser.open("about:blank")
            #expect(try await RawHTTPClient.request("POST", host: first.address, port: first.port, path: "/api/sessions/\(id)/suspend",
                                                    headers: visitor.headers, timeout: 60).status == 202)
            #expect(try await cluster.drover(ownerIndex, ["offline"]).status == 0)
            try await cluster.eventually("node \(ownerIndex) is in offline mode") { try await cluster.statuses().contains { $0.status == "Offline mode" } }
            let node = cluster.nodes[otherIndex]
            let otherVisitor = try await signIn(node, user: Self.owner)
            // The kind counts Jupyter's own activity: a script's read (an open page polling)
            // does not start it again; the page opened does.
            let polled = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/s/\(id)/api/kernels", headers: otherVisitor.headers)
            #expect(polled.status == 409 && polled.body.contains("open its page again"), "\(polled.status) \(polled.body)")
            #expect(try await Self.listed(node, otherVisitor)[id]?.state == "suspended")
            let page = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/s/\(id)/lab",
                                                       headers: otherVisitor.headers + [("Accept", "text/html")], timeout: 120)
            #expect(page.status == 200, "\(page.status) \(page.body.prefix(300))")
            let notebook = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/s/\(id)/api/contents/drover-acceptance.ipynb",
                                                           headers: otherVisitor.headers, timeout: 120)
            #expect(notebook.status == 200 && notebook.body.contains("drover acceptance"), "\(notebook.status) \(notebook.body.prefix(300))")
            let moved = try #require(try await Self.listed(node, otherVisitor)[id])
            let statuses = try await cluster.statuses()
            #expect(moved.node.flatMap { nodeIDs[$0] } == otherIndex && moved.state == "running",
                    "\(moved), owner \(ownerIndex), nodes \(nodeIDs), \(statuses)")
            try await openLab(browser, node, id)
            #expect(try await browser.runAsync(Self.kernelScript) as? String == "output:42 refused:403 saved:200")
            #expect(try await RawHTTPClient.request("DELETE", host: node.address, port: node.port, path: "/api/sessions/\(id)",
                                                    headers: otherVisitor.headers, timeout: 60).status == 204)
        }
        #expect(try await cluster.stop(0) == 0)
        #expect(try await cluster.stop(1) == 0)
        try? FileManager.default.removeItem(atPath: profile)
    }

    /// A front load balancer passing TCP through (TLS included) to the node named in a file, as
    /// `host port`; when the file changes it drops every connection it carries, so the browser's
    /// next request reaches the other node. Prints `listening` once it accepts.
    static let frontBalancer = #"""
    import os, socket, sys, threading, time
    port, target_file = int(sys.argv[1]), sys.argv[2]
    carried, lock = set(), threading.Lock()
    def target():
        host, target_port = open(target_file).read().split()
        return host, int(target_port)
    def shut(s):
        try: s.shutdown(socket.SHUT_RDWR)
        except OSError: pass
    def pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data: break
                b.sendall(data)
        except OSError: pass
        shut(a); shut(b)
    def serve(client):
        try: upstream = socket.create_connection(target(), timeout=10)
        except OSError: client.close(); return
        upstream.settimeout(None)
        with lock: carried.update([client, upstream])
        threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
        pipe(upstream, client)
        with lock: carried.discard(client); carried.discard(upstream)
        client.close(); upstream.close()
    def watch():
        last = os.stat(target_file).st_mtime_ns
        while True:
            time.sleep(0.1)
            now = os.stat(target_file).st_mtime_ns
            if now != last:
                last = now
                with lock: open_now = list(carried)
                for s in open_now: shut(s)
                print("switched", flush=True)
    threading.Thread(target=watch, daemon=True).start()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    print("listening", flush=True)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=serve, args=(client,), daemon=True).start()
    """#

    /// Issue 37, item 5: JupyterLab at its own origin (`https://<id>.sessions.test`), over https
    /// with the wildcard certificate chosen by SNI, behind a front load balancer that sends the
    /// browser to the owning node and then to the other one (a session hop): the Lab loads,
    /// starts a kernel with its XSRF cookie, runs a cell over its WebSocket and saves a notebook,
    /// through either node, at the session's origin and never at Drover's.
    @Test(.enabled(if: (jupyterBin != nil && Browser.available && SystemUsers.available) || ProcessInfo.processInfo.environment["CI"] == "true"))
    func jupyterLabAtItsOwnOriginThroughEitherNode() async throws {
        try await HeavyTests.run(.cores(0.8)) { try await labAtItsOwnOrigin() }
    }

    func labAtItsOwnOrigin() async throws {
        let bin = try #require(Self.jupyterBin, "no JupyterLab: scripts/test.sh installs it from PyPI and sets DROVER_TEST_JUPYTER_BIN")
        #expect(Browser.available, "no chromedriver: scripts/test.sh installs Debian's chromium-driver package")
        try await SystemUsers.ensure([Self.owner])
        let account = try #require(SystemUsers.account(Self.owner))
        let profile = try Self.putOnPath(bin, for: account)
        defer { try? FileManager.default.removeItem(atPath: profile) }
        let notebookPath = account.home + "/drover-acceptance.ipynb"
        _ = try? FileManager.default.removeItem(atPath: notebookPath)
        #expect(!FileManager.default.fileExists(atPath: notebookPath), "the last test's notebook is removed")
        /// Whether the notebook is in the home now, and its time and owner (a failure's message:
        /// in two loaded runs the owner's first save found it there already).
        func notebookOnDisk() -> String {
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: notebookPath) else { return "none" }
            return "modified \(attributes[.modificationDate] ?? "?"), owner \(attributes[.ownerAccountName] ?? "?"), now \(Date())"
        }
        let shipped = Self.shippedKind("jupyterlab")
        let pki = TemporaryDirectory(prefix: "drover-lab-pki")
        let spki = try await SessionOriginBrowserTests.makePKI(in: pki)
        let (domain, mainHost) = (SessionOriginBrowserTests.domain, SessionOriginBrowserTests.mainHost)
        let run = TemporaryDirectory(prefix: "drover-lab-origin-run")
        chmod(run.path, 0o755)
        let cluster = try await TestCluster(addresses: ["127.0.0.1", "127.0.0.2"], backend: .sqlite,
                                            loadBalancer: TestCluster.scaledLoadBalancer + "verify-ssl-certs=0\n", rserver: """
            auth-pam-service=\(SystemUsers.pamService)
            ssl-enabled=1
            ssl-certificate=\(pki.url("main.pem"))
            ssl-certificate-key=\(pki.url("main.key"))
            www-session-domain=\(domain)
            www-main-host=\(mainHost)
            ssl-session-certificate=\(pki.url("sessions.pem"))
            ssl-session-certificate-key=\(pki.url("sessions.key"))
            """)
        var nodes: [RunningProcess] = []
        defer { for node in nodes { node.signal(SIGKILL) } }
        for (index, node) in cluster.nodes.enumerated() {
            let rserver = try String(contentsOfFile: node.path + "/rserver.conf", encoding: .utf8)
            try node.write("rserver.conf", rserver + "\nsession-run-dir=\(run.path)/node\(index)\n")
            try node.write("kinds/jupyterlab.conf", try String(contentsOfFile: shipped, encoding: .utf8))
            // Over https: the cluster's plain-HTTP health check cannot see the node.
            let droverd = try RunningProcess(Executable.path("droverd"), ["--config-dir", node.path])
            nodes.append(droverd)
            try await droverd.waitUntil(timeout: 60, "node \(index) listens") { droverd.stderr.contains("listening") }
        }
        try await cluster.eventually("both nodes Online", timeout: 30) { try await cluster.statuses().filter { $0.status == "Online" }.count == 2 }

        let front = TemporaryDirectory(prefix: "drover-front")
        let frontPort = try FreePort.find()
        func target(_ index: Int) throws {
            try front.write("target", "\(cluster.nodes[index].address) \(cluster.nodes[index].port)\n")
        }
        try target(0)
        try front.write("front.py", Self.frontBalancer)
        let balancer = try RunningProcess("/usr/bin/env", ["python3", front.url("front.py"), String(frontPort), front.url("target")])
        defer { balancer.signal(SIGKILL) }
        try await balancer.waitUntil(timeout: 20, "the front load balancer listens") { balancer.stdout.contains("listening") }
        /// Sends the browser to node `index` from now on: once the balancer says it has dropped
        /// every connection it carried (it notices the change within 0.1 s, or later on a loaded
        /// machine, when it could otherwise cut a request the browser then sends again: a save
        /// cut after the Lab made the file is sent again by Chromium and answered 200, not 201).
        /// Sending it where it already goes changes nothing and drops nothing.
        nonisolated(unsafe) var targeted = 0
        func sendTo(_ index: Int) async throws {
            guard index != targeted else { return }
            targeted = index
            let switches = balancer.stdout.components(separatedBy: "switched").count
            try target(index)
            try await balancer.waitUntil(timeout: 20, "the front load balancer drops what it carried") {
                balancer.stdout.components(separatedBy: "switched").count > switches
            }
        }

        let main = "https://\(mainHost):\(frontPort)"
        let arguments = ["--host-resolver-rules=MAP \(mainHost) 127.0.0.1, MAP *.\(domain) 127.0.0.1", "--ignore-certificate-errors-spki-list=\(spki)"]
        do {
            try await Browser.using(arguments: arguments) { browser in
                try await browser.signIn(at: main, user: Self.owner)
                // The only kind, so the default: no picker. The form's answer (once the Lab is up)
                // comes back to the home page, which then lists it: waited for without navigating
                // away, which would cut the submission short.
                try await browser.click("form[action='/sessions'] button")
                let id = try await eventuallyValue("the session is listed", timeout: 150) {
                    (try await browser.run("const r = document.querySelector('tr[id^=session-]'); return r ? r.id.slice(8) : null") as? String)
                }
                let owner = try await eventuallyValue("the session's folder on its node", timeout: 120) {
                    (0..<2).first { FileManager.default.fileExists(atPath: "\(run.path)/node\($0)/\(id)") }
                }
                let origin = "https://\(id).\(domain):\(frontPort)"
                let onDiskAtStart = notebookOnDisk()
                for index in [owner, 1 - owner] {
                    try await sendTo(index)
                    try await browser.open("\(main)/s/\(id)/lab")
                    _ = try await eventuallyValue("the Lab's interface at its own origin through node \(index)", timeout: 120) {
                        (try await browser.run("return location.origin === '\(origin)' && document.querySelector('#jp-main-dock-panel') !== null "
                                               + "&& document.cookie.includes('_xsrf=')") as? Bool) == true ? true : nil
                    }
                    let onDiskBefore = notebookOnDisk()
                    let (result, trace) = try await runKernelScript(browser)
                    #expect(result == "output:42 refused:403 saved:\(index == owner ? 201 : 200)",
                            "through node \(index): \(result ?? "nil") (\(trace); on disk when the session was listed: \(onDiskAtStart); before this pass: \(onDiskBefore))")
                    #expect(try await browser.run("return location.origin") as? String == origin)
                }
                try await browser.open(main + "/")
                try await browser.click("form[action='/sessions/\(id)/quit'] button")
            }
        } catch {
            throw TestFailure("\(error)\n--- node 0:\n\(nodes[0].stderr.suffix(3000))\n--- node 1:\n\(nodes[1].stderr.suffix(3000))")
        }
        for node in nodes { node.signal(SIGTERM) }
        for node in nodes { #expect(try await node.wait(timeout: 60) == 0) }
    }

    /// Issue 35, item 1, at scaled-down timeouts (`session-timeout-minutes=0.1`: six seconds),
    /// with the shipped kind (`activity=jupyter`) and two sessions at once: one whose kernel runs
    /// code for 30 s after its client has gone is not suspended while it runs, and is once it is
    /// done; one with nothing running and its Lab open in Chromium, polling, is suspended, and
    /// stays so while the tab polls, until the page is opened again.
    @Test(.enabled(if: (jupyterBin != nil && Browser.available && SystemUsers.available) || ProcessInfo.processInfo.environment["CI"] == "true"))
    func idleMeansIdleForJupyterToo() async throws {
        try await HeavyTests.run(.cores(0.3)) { try await idle() }
    }

    func idle() async throws {
        let bin = try #require(Self.jupyterBin, "no JupyterLab: scripts/test.sh installs it from PyPI and sets DROVER_TEST_JUPYTER_BIN")
        try await SystemUsers.ensure([Self.owner])
        let account = try #require(SystemUsers.account(Self.owner))
        let profile = try Self.putOnPath(bin, for: account)
        defer { try? FileManager.default.removeItem(atPath: profile) }
        let shipped = Self.shippedKind("jupyterlab")
        let run = TemporaryDirectory(prefix: "drover-idle-run")
        chmod(run.path, 0o755)
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite, rserver: """
            auth-pam-service=\(SystemUsers.pamService)
            session-run-dir=\(run.path)/node
            session-timeout-minutes=0.1
            """)
        let node = cluster.nodes[0]
        // With a memory limit too: a kernel that outgrows it ends its session (item 2).
        try node.write("kinds/jupyterlab.conf", try String(contentsOfFile: shipped, encoding: .utf8) + "\nmemory-limit=768M\n")
        try await cluster.start(0)
        let visitor = try await signIn(node, user: Self.owner)
        func start() async throws -> String {
            let created = try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/api/sessions",
                                                          headers: visitor.headers, timeout: 120)
            return try #require(json(created)["id"] as? String, "\(created.status) \(created.body)")
        }
        let (working, watched) = (try await start(), try await start())

        // A kernel runs thirty seconds of code; its client sends the request and goes away.
        let lab = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/s/\(working)/lab",
                                                  headers: visitor.headers + [("Accept", "text/html")], timeout: 60)
        let xsrf = try #require(lab.headers.first { $0.0.lowercased() == "set-cookie" && $0.1.hasPrefix("_xsrf=") }
            .map { String($0.1.dropFirst(6).prefix { $0 != ";" }) }, "\(lab.status) \(lab.headers)")
        let cookies = [("Cookie", visitor.cookie + "; _xsrf=" + xsrf), ("X-CSRF-Token", visitor.csrf), ("X-XSRFToken", xsrf)]
        let kernel = try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/s/\(working)/api/kernels",
                                                     headers: cookies, body: #"{"name":"python3"}"#, timeout: 60)
        let kernelID = try #require(json(kernel)["id"] as? String, "\(kernel.status) \(kernel.body)")
        let channel = try await RawWebSocket.hold(host: node.address, port: node.port, path: "/s/\(working)/api/kernels/\(kernelID)/channels",
                                                  headers: [("Cookie", visitor.cookie + "; _xsrf=" + xsrf)])
        try await channel.send(#"{"header":{"msg_id":"drover-idle-1","msg_type":"execute_request","username":"drover","session":"drover-idle","version":"5.3","date":"2026-01-01T00:00:00Z"},"parent_header":{},"metadata":{},"channel":"shell","buffers":[],"content":{"code":"import time\ntime.sleep(30)","silent":false,"store_history":false,"user_expressions":{},"allow_stdin":false,"stop_on_error":true}}"#)
        try await Task.sleep(for: .seconds(1))
        channel.close()
        let workStarted = Date()

        try await Browser.using { browser in
            // The other session's Lab, open in a real browser, with nothing running.
            try await signInThroughTheForm(browser, node)
            try await openLab(browser, node, watched)
            let proxied = { () async throws -> Double in
                let metrics = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/metrics").body
                return metrics.split(separator: "\n").filter { $0.hasPrefix("drover_proxied_requests_total{") }
                    .compactMap { Double($0.split(separator: " ").last ?? "") }.reduce(0, +)
            }
            let before = try await proxied()
            // The page's own count of its requests to the server, from now on.
            try await browser.run("performance.setResourceTimingBufferSize(100000); performance.clearResourceTimings()")
            let pageRequests = { () async throws -> Int in
                (try await browser.run("return performance.getEntriesByType('resource').filter(e => e.name.includes('/api/')).length") as? Int) ?? -1
            }
            // Polled, and suspended: within the timeout, one sweep and a margin.
            let deadline = Date().addingTimeInterval(25)
            var states: [String: String] = [:]
            while Date() < deadline {
                let listed = try await Self.listed(node, visitor)
                states = listed.mapValues(\.state)
                #expect(states[working] == "running", "the working kernel's session was suspended after \(Int(Date().timeIntervalSince(workStarted))) s: \(states)")
                if states[watched] == "suspended" { break }
                try await Task.sleep(for: .seconds(1))
            }
            #expect(states[watched] == "suspended", "the open, idle Lab was not suspended: \(states)")
            let polls = try await proxied() - before
            #expect(polls >= 3, "the open tab polled the server (\(polls) requests)")
            // It stays suspended with its tab open and polling; the work goes on.
            let polledBefore = try await pageRequests()
            try await Task.sleep(for: .seconds(12))
            let later = try await Self.listed(node, visitor)
            #expect(later[watched]?.state == "suspended" && later[working]?.state == "running", "\(later)")
            let polledAfter = try await pageRequests()
            #expect(polledAfter > polledBefore, "the tab went on polling (\(polledBefore) then \(polledAfter) requests)")
            // Once the work is done, the working session is idle too.
            try await cluster.eventually("the working session suspended once its kernel is idle", timeout: 45) {
                try await Self.listed(node, visitor)[working]?.state == "suspended"
            }
            #expect(Date().timeIntervalSince(workStarted) > 29, "suspended before its work ended")
            let audit = try await cluster.drover(0, ["audit"]).stdout
            #expect(audit.contains("session-suspend  \(watched)") && audit.contains("idle: no running kernel, kernel or terminal activity, or client writes for"), "\(audit)")
            // The page opened again starts it.
            try await openLab(browser, node, watched)
            #expect(try await Self.listed(node, visitor)[watched]?.state == "running")

            // A cell takes 2 GiB under a memory-limit of 768M: the kernel is killed, and with it
            // the session, which waits for its user; the Lab's next page says why, and its
            // button starts it again.
            #expect(try await browser.runAsync(Self.hogScript) as? String == "sent")
            try await cluster.eventually("the session is held for its memory", timeout: 60) {
                let listed = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/api/sessions", headers: visitor.headers).body
                return listed.contains(#""held":"it used more than its memory-limit of 768M and the kernel ended it""#)
            }
            try await browser.open(node.baseURL + "/s/\(watched)/lab")
            let page = try await browser.source
            #expect(page.contains("This session was stopped") && page.contains("memory-limit of 768M"), "\(page.prefix(600))")
            try await Task.sleep(for: .seconds(3))
            #expect(try await Self.listed(node, visitor)[watched]?.state == "suspended", "it does not start again on its own")
            try await browser.click("#start-again")
            _ = try await eventuallyValue("the Lab again after Start it again", timeout: 90) {
                (try await browser.run("return document.querySelector('#jp-main-dock-panel') !== null") as? Bool) == true ? true : nil
            }
            #expect(try await Self.listed(node, visitor)[watched]?.state == "running")
            let ended = try await cluster.drover(0, ["audit"]).stdout
            #expect(ended.contains("session-end  \(watched)") && ended.contains("memory-limit: it used more than its memory-limit of 768M"), "\(ended)")
        }
        #expect(try await cluster.stop(0) == 0)
    }

    /// In the Lab page: starts a kernel (with Jupyter's XSRF header) and sends it a cell that
    /// allocates 2 GiB; reports `sent` once the request is on its way.
    static let hogScript = #"""
    const done = arguments[arguments.length - 1];
    (async () => {
      try {
        const base = location.pathname.slice(0, location.pathname.indexOf('/lab')) + '/';
        const xsrf = decodeURIComponent((document.cookie.split('; ').find(c => c.startsWith('_xsrf=')) || '=').split('=').slice(1).join('='));
        const made = await fetch(base + 'api/kernels', {method: 'POST', headers: {'X-XSRFToken': xsrf, 'Content-Type': 'application/json'}, body: '{"name":"python3"}'});
        if (made.status !== 201) { done('kernel start: ' + made.status); return; }
        const kernel = await made.json();
        const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + base + 'api/kernels/' + kernel.id + '/channels');
        ws.onopen = () => {
          ws.send(JSON.stringify({
            header: {msg_id: 'drover-hog', msg_type: 'execute_request', username: 'drover', session: 'drover-hog', date: new Date().toISOString(), version: '5.3'},
            parent_header: {}, metadata: {}, channel: 'shell', buffers: [],
            content: {code: "hog = bytearray(b'\x01') * (2 << 30)", silent: false, store_history: false, user_expressions: {}, allow_stdin: false, stop_on_error: true}}));
          done('sent');
        };
        ws.onerror = () => done('websocket error');
      } catch (error) { done('error: ' + error); }
    })();
    """#

    /// The user's sessions as the API lists them: id → (state, node).
    static func listed(_ node: ConfigDirectory, _ visitor: Visitor) async throws -> [String: (state: String, node: Int64?)] {
        let answer = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/api/sessions", headers: visitor.headers)
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [[String: Any]], "\(answer.body)")
        return Dictionary(uniqueKeysWithValues: rows.map { ($0["id"] as? String ?? "", ($0["state"] as? String ?? "", ($0["node"] as? NSNumber)?.int64Value)) })
    }

    /// Jupyter Notebook 7 from PyPI through its shipped kind: its tree page, and a kernel started
    /// with Jupyter's XSRF cookie and header (refused without them), through the node.
    @Test(.enabled(if: (jupyterBin != nil && SystemUsers.available) || ProcessInfo.processInfo.environment["CI"] == "true"))
    func jupyterNotebookThroughItsShippedKind() async throws {
        let bin = try #require(Self.jupyterBin, "no Jupyter: scripts/test.sh installs it from PyPI and sets DROVER_TEST_JUPYTER_BIN")
        try await SystemUsers.ensure([Self.stranger])
        let account = try #require(SystemUsers.account(Self.stranger))
        let profile = try Self.putOnPath(bin, for: account)
        defer { try? FileManager.default.removeItem(atPath: profile) }
        let shipped = Self.shippedKind("jupyter-notebook")
        let run = TemporaryDirectory(prefix: "drover-nb-run")
        chmod(run.path, 0o755)
        let cluster = try await TestCluster(addresses: ["127.0.0.1"], backend: .sqlite, rserver: """
            auth-pam-service=\(SystemUsers.pamService)
            session-run-dir=\(run.path)/node
            """)
        let node = cluster.nodes[0]
        try node.write("kinds/jupyter-notebook.conf", try String(contentsOfFile: shipped, encoding: .utf8))
        try await cluster.start(0)
        let visitor = try await signIn(node, user: Self.stranger)
        // The only kind is the default one: a start that names none gets it.
        let created = try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/api/sessions",
                                                      headers: visitor.headers, timeout: 120)
        let id = try #require(json(created)["id"] as? String, "\(created.status) \(created.body)")
        let tree = try await RawHTTPClient.request(host: node.address, port: node.port, path: "/s/\(id)/tree", headers: visitor.headers, timeout: 60)
        #expect(tree.status == 200 && tree.body.contains("Jupyter Notebook"), "\(tree.status)")
        let xsrf = try #require(tree.headers.first { $0.0.lowercased() == "set-cookie" && $0.1.hasPrefix("_xsrf=") }
            .map { String($0.1.dropFirst(6).prefix { $0 != ";" }) }, "\(tree.headers)")
        let cookies = [("Cookie", visitor.cookie + "; _xsrf=" + xsrf), ("X-CSRF-Token", visitor.csrf)]
        let refused = try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/s/\(id)/api/kernels",
                                                      headers: cookies, body: #"{"name":"python3"}"#, timeout: 60)
        #expect(refused.status == 403, "without X-XSRFToken: \(refused.status)")
        let kernel = try await RawHTTPClient.request("POST", host: node.address, port: node.port, path: "/s/\(id)/api/kernels",
                                                     headers: cookies + [("X-XSRFToken", xsrf)], body: #"{"name":"python3"}"#, timeout: 60)
        #expect(kernel.status == 201 && json(kernel)["execution_state"] != nil, "\(kernel.status) \(kernel.body)")
        #expect(try await RawHTTPClient.request("DELETE", host: node.address, port: node.port, path: "/api/sessions/\(id)",
                                                headers: visitor.headers, timeout: 60).status == 204)
        #expect(try await cluster.stop(0) == 0)
    }

    func signInThroughTheForm(_ browser: Browser, _ node: ConfigDirectory) async throws {
        try await browser.signIn(at: node.baseURL, user: Self.owner)
    }

    /// Puts the Jupyter virtual environment `bin` on the PATH `account`'s profile sets, as a
    /// user's own conda or venv would be (the shipped kinds name `jupyter-lab` alone).
    /// - Returns: the profile's path, for the caller to remove.
    static func putOnPath(_ bin: String, for account: SystemUsers.Account) throws -> String {
        let profile = account.home + "/.profile"
        try "export PATH=\"\(bin):$PATH\"\n".write(toFile: profile, atomically: false, encoding: .utf8)
        chown(profile, account.uid, account.gid)
        return profile
    }

    /// The shipped kind file `config/kinds.available/NAME.conf` of this checkout.
    static func shippedKind(_ name: String) -> String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("config/kinds.available/\(name).conf").path
    }

    /// Runs `kernelScript` in the Lab open in `browser`; returns its result and, for a failure's
    /// message, how often it ran and on which pages (the notebook asked for before its save).
    func runKernelScript(_ browser: Browser) async throws -> (result: String?, trace: String) {
        try await browser.run("sessionStorage.removeItem('droverRuns'); sessionStorage.removeItem('droverPages')")
        let result = try await browser.runAsync(Self.kernelScript) as? String
        let trace = try await browser.run("return 'the notebook, asked for before it was saved: ' + window.droverFoundBefore + '; runs: ' "
                                          + "+ sessionStorage.getItem('droverRuns') + ', pages:' + sessionStorage.getItem('droverPages')")
        return (result, trace as? String ?? "?")
    }

    /// Opens the Lab and waits for its interface (its scripts came through the proxy).
    func openLab(_ browser: Browser, _ node: ConfigDirectory, _ id: String) async throws {
        try await browser.open(node.baseURL + "/s/\(id)/lab")
        _ = try await eventuallyValue("the Lab's interface on \(node.address)", timeout: 90) {
            (try await browser.run("return document.querySelector('#jp-main-dock-panel') !== null && document.cookie.includes('_xsrf=')") as? Bool) == true ? true : nil
        }
    }

}

import DroverKernel
import DroverTesting
import Foundation
import Testing

/// `kinds/NAME.conf` (README, "Session kinds"): what a kind file says, and every mistake refused
/// at start with the file, the line and what to write instead.
@Suite struct SessionKindConfigurationTests {
    func parse(_ text: String, name: String = "lab") throws(ConfigurationError) -> SessionKind {
        try SessionKind(file: ConfigFile(parsing: text, path: "/etc/drover/kinds/\(name).conf"), name: name, baseDirectory: "/etc/drover")
    }

    /// The message of the error `text` is refused with.
    func refusal(_ text: String, name: String = "lab") -> String {
        do {
            _ = try parse(text, name: name)
            return "accepted"
        } catch {
            return error.description
        }
    }

    static let lab = #"command=["/opt/jupyter/bin/jupyter-lab", "--ServerApp.sock={socket}", "--ServerApp.base_url={base-path}"]"#

    @Test func aKindReadsEveryKey() throws {
        let kind = try parse("""
            label=JupyterLab
            \(Self.lab)
            endpoint=unix-socket
            ready-path={base-path}api/status
            start-timeout=90
            base-path=strip
            groups=analysts, staff
            env.JUPYTER_CONFIG_DIR={state-dir}/jupyter
            env.MPLBACKEND=Agg
            """)
        #expect(kind.name == "lab" && kind.label == "JupyterLab")
        #expect(kind.command == ["/opt/jupyter/bin/jupyter-lab", "--ServerApp.sock={socket}", "--ServerApp.base_url={base-path}"])
        #expect(kind.endpoint == .unixSocket && kind.readyPath == "{base-path}api/status" && kind.startTimeout == 90)
        #expect(kind.basePath == .strip && kind.groups == ["analysts", "staff"])
        #expect(kind.environment.map(\.name) == ["JUPYTER_CONFIG_DIR", "MPLBACKEND"])
        #expect(kind.shellLine == nil && !kind.usesSecret)
        #expect(SessionKind.fill(kind.command[1], [.socket: "/run/drover/x/http.sock"]) == "--ServerApp.sock=/run/drover/x/http.sock")
    }

    @Test func defaultsAreTheNameTheBasePathAndThirtySeconds() throws {
        let kind = try parse(#"command=["/usr/bin/app"]"# + "\nendpoint=inherited\n")
        #expect(kind.label == "lab" && kind.readyPath == "{base-path}" && kind.startTimeout == 30 && kind.basePath == .keep && kind.groups.isEmpty)
    }

    @Test func everyMistakeNamesTheFileTheLineAndTheFix() {
        let file = "/etc/drover/kinds/lab.conf"
        #expect(refusal("endpoint=unix-socket\n\(Self.lab)\nlable=Lab\n")
                    == "\(file):3: unknown key 'lable'; a kind takes activity, base-path, command, cpu-limit, endpoint, groups, label, memory-limit, ready-path, secret-header, start-timeout, trust-local-users and env.NAME=value")
        #expect(refusal("endpoint=inherited\n").hasPrefix("\(file): has no command; add a line like command=["))
        #expect(refusal("command=jupyter-lab --ServerApp.sock={socket}\nendpoint=unix-socket\n")
                    .hasPrefix("\(file):1: 'command' is the program and its arguments as a JSON array of non-empty strings"))
        #expect(refusal(#"command=[]"# + "\nendpoint=inherited\n").hasPrefix("\(file):1: 'command' is the program"))
        #expect(refusal(#"command=["/bin/app", "{sockt}"]"# + "\nendpoint=inherited\n")
                    == "\(file):1: unknown placeholder '{sockt}' in 'command'; the placeholders are {session-id}, {user}, {base-path}, {socket}, {port}, {state-dir}, {secret-file}")
        #expect(refusal(#"command=["/bin/app"]"#).hasPrefix("\(file): has no endpoint; add endpoint=unix-socket"))
        #expect(refusal(#"command=["/bin/app"]"# + "\nendpoint=socket\n")
                    == "\(file):2: 'endpoint' must be one of inherited, systemd-socket, unix-socket, tcp-port, found 'socket'")
        #expect(refusal(#"command=["/bin/app"]"# + "\nendpoint=unix-socket\n")
                    == "\(file):2: endpoint=unix-socket needs {socket} in the command or an env.NAME line: that is where the program must bind")
        #expect(refusal(#"command=["/bin/app"]"# + "\nendpoint=tcp-port\n").hasPrefix("\(file):2: endpoint=tcp-port needs {port}"))
        #expect(refusal(#"command=["/bin/app", "{port}"]"# + "\nendpoint=tcp-port\n")
                    .hasPrefix("\(file):2: endpoint=tcp-port lets every local user of the node connect to the session's port: give the program a secret"))
        #expect(refusal(#"command=["/bin/app", "{port}"]"# + "\nendpoint=tcp-port\ntrust-local-users=1\n") == "accepted")
        #expect(refusal(#"command=["/bin/app", "--port={port}"]"# + "\nendpoint=unix-socket\nenv.S={socket}\n")
                    == "\(file):2: {port} is only for endpoint=tcp-port; with endpoint=unix-socket remove it")
        #expect(refusal(#"command=["/bin/app", "{socket}"]"# + "\nendpoint=inherited\n")
                    == "\(file):2: {socket} is only for endpoint=unix-socket; with endpoint=inherited remove it")
        #expect(refusal(#"command=["/bin/app", "{port}"]"# + "\nendpoint=tcp-port\nsecret-header=X-Token\n")
                    .hasPrefix("\(file):3: 'secret-header' needs {secret-file}"))
        #expect(refusal(#"command=["/bin/app", "{port}", "{secret-file}"]"# + "\nendpoint=tcp-port\n")
                    == "\(file): uses {secret-file} but has no secret-header=NAME, so droverd would not send the secret")
        #expect(refusal(Self.lab + "\nendpoint=unix-socket\nsecret-header=X-Token\nenv.T={secret-file}\n")
                    .hasPrefix("\(file):3: 'secret-header' is for endpoint=tcp-port"))
        #expect(refusal(#"command=["/bin/app", "{port}", "{secret-file}"]"# + "\nendpoint=tcp-port\nsecret-header=Authorization\n")
                    .hasPrefix("\(file): secret-header=Authorization would replace a header the client or the proxy needs"))
        #expect(refusal(Self.lab + "\nendpoint=unix-socket\nready-path=api/status\n")
                    == "\(file):3: 'ready-path' is a path on the program's server, like {base-path}api/status or /healthz")
        #expect(refusal(Self.lab + "\nendpoint=unix-socket\nenv.DROVER_SESSION_ID=x\n") == "\(file):3: 'env.DROVER_SESSION_ID' is set by Drover itself; remove the line")
        #expect(refusal(Self.lab + "\nendpoint=unix-socket\nenv.1X=x\n").hasPrefix("\(file):3: 'env.1X' does not name an environment variable"))
        #expect(refusal(Self.lab + "\nendpoint=unix-socket\nbase-path=drop\n").hasPrefix("\(file):3: 'base-path' must be keep"))
        #expect(refusal(Self.lab + "\nendpoint=unix-socket\nstart-timeout=0\n") == "\(file):3: 'start-timeout' must be from 1 to 3600, found 0")
    }

    @Test func limitsAndTheActivitySourceAreReadAndMistakesNamed() throws {
        let kind = try parse(Self.lab + "\nendpoint=unix-socket\nmemory-limit=4G\ncpu-limit=1.5\nactivity=jupyter\n")
        #expect(kind.limits == SessionLimits(memoryBytes: 4 << 30, cpus: 1.5) && kind.activity == .jupyter)
        let plain = try parse(Self.lab + "\nendpoint=unix-socket\n")
        #expect(plain.limits.isEmpty && plain.activity == .client)
        let file = "/etc/drover/kinds/lab.conf"
        #expect(refusal(Self.lab + "\nendpoint=unix-socket\nmemory-limit=4GB\n")
                    == "\(file):3: 'memory-limit' is a size like 512M, 4G or 1.5G (K, M, G, T are powers of 1024), found '4GB'")
        #expect(refusal(Self.lab + "\nendpoint=unix-socket\nmemory-limit=1M\n")
                    == "\(file):3: 'memory-limit' must be at least 32M (no program starts in less), found '1M'")
        #expect(refusal(Self.lab + "\nendpoint=unix-socket\ncpu-limit=0\n")
                    == "\(file):3: 'cpu-limit' is a number of CPUs from 0.01 to 4096, like 0.5 or 2, found '0'")
        #expect(refusal(Self.lab + "\nendpoint=unix-socket\nactivity=kernels\n")
                    == "\(file):3: 'activity' must be one of client, jupyter (what keeps a session from session-timeout-minutes), found 'kernels'")
    }

    @Test func aSecretIsReadFromAFileAndSentAsAHeader() throws {
        let kind = try parse(#"command=["/usr/bin/app", "--port={port}", "--token-file={secret-file}"]"# + "\nendpoint=tcp-port\nsecret-header=X-App-Token\n")
        #expect(kind.usesSecret && kind.secretHeader == "X-App-Token")
    }

    // MARK: the directory

    func load(_ files: [String: String], rserver: String = "") throws(ConfigurationError) -> DroverConfiguration {
        let directory = TemporaryDirectory(prefix: "drover-kinds")
        _ = try? directory.write("rserver.conf", "server-data-dir=data\n" + rserver)
        for (name, text) in files { _ = try? directory.write("kinds/" + name, text) }
        return try DroverConfiguration.load(directory: directory.path)
    }

    func loadRefusal(_ files: [String: String], rserver: String = "") -> String {
        do {
            _ = try load(files, rserver: rserver)
            return "accepted"
        } catch {
            return error.message
        }
    }

    @Test func sessionCommandIsTheDefaultKindBesideTheKindFiles() throws {
        let config = try load(["lab.conf": Self.lab + "\nendpoint=unix-socket\n"], rserver: "session-command=/usr/bin/drover-demo-session\n")
        #expect(config.kinds.names == ["default", "lab"])
        #expect(config.kinds.defaultKind == "default")
        #expect(config.kinds["default"]?.shellLine == "/usr/bin/drover-demo-session" && config.kinds["default"]?.endpoint == .inherited)
        let chosen = try load(["lab.conf": Self.lab + "\nendpoint=unix-socket\n"],
                              rserver: "session-command=/usr/bin/drover-demo-session\ndefault-session-kind=lab\n")
        #expect(chosen.kinds.defaultKind == "lab")
        // One kind and no session-command: that kind is the default; two: none, a start must name one.
        #expect(try load(["lab.conf": Self.lab + "\nendpoint=unix-socket\n"]).kinds.defaultKind == "lab")
        #expect(try load(["lab.conf": Self.lab + "\nendpoint=unix-socket\n", "nb.conf": Self.lab + "\nendpoint=unix-socket\n"]).kinds.defaultKind == nil)
    }

    @Test func kindFilesAreNamedAndCountedOnce() {
        #expect(loadRefusal(["Lab.conf": Self.lab + "\nendpoint=unix-socket\n"])
                    .hasPrefix("'Lab' cannot name a kind: use lower-case letters, digits and dashes"))
        #expect(loadRefusal(["lab.txt": ""]).hasPrefix("kind files are named NAME.conf; rename it or move it out of"))
        #expect(loadRefusal(["default.conf": Self.lab + "\nendpoint=unix-socket\n"], rserver: "session-command=/bin/x\n")
                    .hasPrefix("the kind 'default' is session-command in"))
        #expect(loadRefusal(["lab.conf": Self.lab + "\nendpoint=unix-socket\n"], rserver: "default-session-kind=rstudio\n")
                    .hasPrefix("default-session-kind=rstudio names no kind (the kinds are lab); add "))
    }

    @Test func theShippedKindsParse() throws {
        let shipped = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("config/kinds.available").path
        let names = try FileManager.default.contentsOfDirectory(atPath: shipped).sorted()
        #expect(names == ["jupyter-notebook.conf", "jupyterlab.conf"])
        for name in names {
            let text = try String(contentsOfFile: shipped + "/" + name, encoding: .utf8)
            let kind = try parse(text, name: String(name.dropLast(5)))
            #expect(kind.endpoint == .unixSocket && kind.readyPath == "{base-path}api/status" && kind.activity == .jupyter, "\(name)")
        }
    }
}

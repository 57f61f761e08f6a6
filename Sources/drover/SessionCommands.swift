import ArgumentParser
import DroverCluster
import DroverKernel
import Foundation

/// The node running with this configuration, reached over its own port.
struct LocalNode {
    let config: DroverConfiguration
    let host: String
    let client: NodeClient

    init(_ config: DroverConfiguration) throws {
        self.config = config
        let server = config.server
        host = ["0.0.0.0", "::", ""].contains(server.wwwAddress) ? "127.0.0.1" : server.wwwAddress
        let key = (try? SecureCookieKey.load(from: config.secureCookieKeyPath)) ?? SecureCookieKey(bytes: Crypto.randomBytes(32))
        do {
            // A local call: the certificate names the public host, not this address.
            client = try NodeClient(key: key, protocol: server.sslEnabled ? .httpsNoVerify : .http,
                                    timeoutSeconds: max(config.effectiveLoadBalancer.timeout, 60))
        } catch {
            throw CommandFailure("\(error)", status: 1)
        }
    }

    func call(_ call: InternalCall) async throws -> NodeClient.Response {
        do {
            return try await client.call(call, host: host, port: config.server.wwwPort)
        } catch {
            throw CommandFailure("\(error); is droverd running with \(config.directory)?", status: 1)
        }
    }

    func get(_ path: String) async throws -> NodeClient.Response {
        do {
            return try await client.send(.GET, path, to: host, port: config.server.wwwPort)
        } catch {
            throw CommandFailure("\(error); is droverd running with \(config.directory)?", status: 1)
        }
    }
}

struct SuspendAll: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "suspend-all",
        abstract: "Suspend every session on this node; each resumes, with its state, where the balancer puts it next.")

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let response = try await LocalNode(try options.load()).call(.suspendAll(by: Operator.name))
        guard response.status == 200, let answer = try? response.decode(InternalCall.SuspendAllAnswer.self) else {
            throw CommandFailure("the node answered \(response.status): \(response.text)", status: 1)
        }
        print("Suspended \(answer.suspended) session(s).")
    }
}

struct ActiveSessions: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "active-sessions",
        abstract: "List the sessions running on this node: pid, user, session id, age.")

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let config = try options.load()
        guard let text = try? String(contentsOfFile: config.nodeIDFile, encoding: .utf8),
              let node = Int64(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw CommandFailure("this node has not joined yet (no \(config.nodeIDFile)); start droverd first", status: 1)
        }
        let (sessions, now) = try await RegistryAccess.using(options) { access in
            (try await access.store.sessions(matching: SessionFilter(node: node, states: [.starting, .running, .suspending])), try await access.store.now())
        }
        print("PID".padding(toLength: 8, withPad: " ", startingAt: 0) + "USER".padding(toLength: 16, withPad: " ", startingAt: 0)
              + "SESSION".padding(toLength: 34, withPad: " ", startingAt: 0) + "AGE")
        for session in sessions {
            let age = Int(now.timeIntervalSince(session.createdAt))
            let ageText = age >= 3600 ? "\(age / 3600)h\(age % 3600 / 60)m" : age >= 60 ? "\(age / 60)m\(age % 60)s" : "\(age)s"
            print((session.ownership.pid.map(String.init) ?? "-").padding(toLength: 8, withPad: " ", startingAt: 0)
                  + session.username.padding(toLength: 16, withPad: " ", startingAt: 0)
                  + session.id.padding(toLength: 34, withPad: " ", startingAt: 0) + ageText
                  + (session.ownership.state == .running ? "" : " (\(session.ownership.state.rawValue))"))
        }
    }
}

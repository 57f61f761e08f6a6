import DroverKernel
import DroverTesting
import Foundation
import Testing

/// The test kit's partition tool: a thread that sent a request from a lab host is back in the
/// test process's own network namespace before it does anything else. Two proof runs on 9c63535
/// failed without this: a thread of the test process had been left in a lab host, and the tests
/// whose code ran on it (or on threads it made) were refused at 127.0.0.1 by droverd and the
/// shared PostgreSQL, both up and listening there.
@Suite struct NetworkLabTests {
    static func namespace(_ link: String) throws -> String {
        try FileManager.default.destinationOfSymbolicLink(atPath: link)
    }

    @Test(.enabled(if: NetworkLab.shouldRun))
    func aThreadIsBackInTheProcesssNamespaceAfterWorkingInALabHost() async throws {
        let lab = try await NetworkLab(hosts: ["a"])
        let home = try Self.namespace("/proc/self/ns/net")
        let path = lab.namespace("a")
        let (inside, after, afterAThrow) = try await onOwnThread {
            let inside = try NetworkLab.within(path) { try Self.namespace("/proc/thread-self/ns/net") }
            let after = try Self.namespace("/proc/thread-self/ns/net")
            _ = try? NetworkLab.within(path) { throw TestFailure("the body failed") }
            return (inside, after, try Self.namespace("/proc/thread-self/ns/net"))
        }
        #expect(inside != home, "the body ran in the lab host")
        #expect(after == home)
        #expect(afterAThrow == home, "back also when the body throws")
        // Through the clients that take a lab host: a request from it, then one from the machine.
        let port = try FreePort.find()
        _ = try? await RawHTTPClient.request(host: "127.0.0.1", port: port, path: "/", timeout: 2, networkNamespace: path)
        #expect(Self.threadNamespaces(in: path).isEmpty)
    }

    /// The threads of this process in the namespace at `path`.
    static func threadNamespaces(in path: String) -> [String] {
        var info = stat()
        guard stat(path, &info) == 0 else { return [] }
        let threads = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return threads.filter { (try? namespace("/proc/self/task/\($0)/ns/net")) == "net:[\(info.st_ino)]" }
    }
}

import Foundation

/// A configuration directory for one test node: `rserver.conf` pointing at a free loopback port
/// and at data inside the directory, a valid key, and whatever else the test writes.
public final class ConfigDirectory: Sendable {
    public let directory: TemporaryDirectory
    public let address: String
    public let port: Int

    public var path: String { directory.path }

    /// - Parameters:
    ///   - address: a 127.0.0.0/8 address to serve on (or a ``NetworkLab`` host's).
    ///   - port: the port to serve on; nil: a free one at `address`.
    ///   - key: the secure cookie key text, or nil to write none.
    ///   - rserver: extra `rserver.conf` lines.
    public init(address: String = "127.0.0.1", port: Int? = nil, key: String? = "0123456789abcdef0123456789abcdef", rserver: String = "") throws {
        directory = TemporaryDirectory(prefix: "drover-config")
        self.address = address
        self.port = try port ?? FreePort.find(host: address)
        try directory.write("rserver.conf", """
            www-address=\(address)
            www-port=\(self.port)
            server-data-dir=data
            server-shared-storage-path=shared
            \(rserver)
            """)
        if let key { try directory.write("secure-cookie-key", key + "\n", mode: 0o600) }
    }

    @discardableResult
    public func write(_ name: String, _ text: String, mode: Int = 0o644) throws -> String {
        try directory.write(name, text, mode: mode)
    }

    /// `http://address:port`.
    public var baseURL: String { "http://\(address):\(port)" }
}

import Foundation

/// Where other nodes and users reach this node.
public struct NodeAddress: Sendable, Equatable {
    public var host: String
    /// The IPv4 address `host` resolves to; nil when it does not resolve.
    public var ipv4: String?
    public var port: Int
    /// Which of the seed's strategies produced it.
    public var source: Source

    public enum Source: String, Sendable {
        case wwwHostName = "www-host-name"
        case wwwAddress = "www-address"
        case hostname = "hostname"
        case interface = "interface address"
    }

    public init(host: String, ipv4: String?, port: Int, source: Source) {
        self.host = host
        self.ipv4 = ipv4
        self.port = port
        self.source = source
    }

    /// `ipv4:port`, or `host:port` when the host did not resolve: what peers connect to.
    public var endpoint: String { "\(ipv4 ?? host):\(port)" }
}

/// Resolves this node's address by the seed's strategies, in order, taking the first that works:
/// `www-host-name`; `www-address` with `www-port`; the `hostname` system call; the last IPv4,
/// non-loopback interface address.
public enum NodeAddressResolver {
    /// The system facts resolution depends on, replaceable in tests.
    public struct Environment: Sendable {
        public var hostName: @Sendable () -> String?
        public var resolveIPv4: @Sendable (String) -> String?
        public var interfaceIPv4s: @Sendable () -> [String]

        public init(hostName: @escaping @Sendable () -> String?, resolveIPv4: @escaping @Sendable (String) -> String?,
                    interfaceIPv4s: @escaping @Sendable () -> [String]) {
            self.hostName = hostName
            self.resolveIPv4 = resolveIPv4
            self.interfaceIPv4s = interfaceIPv4s
        }

        /// The real machine.
        public static let system = Environment(hostName: systemHostName, resolveIPv4: systemResolveIPv4, interfaceIPv4s: systemInterfaceIPv4s)
    }

    /// The address, or nil when no strategy yields one. An explicit `www-host-name` that does
    /// not resolve is returned with a nil `ipv4` (the node is then `Failed to resolve`).
    public static func resolve(wwwHostName: String?, wwwAddress: String, wwwPort: Int, environment: Environment = .system) -> NodeAddress? {
        if let name = wwwHostName {
            return NodeAddress(host: name, ipv4: isIPv4(name) ? name : environment.resolveIPv4(name), port: wwwPort, source: .wwwHostName)
        }
        if !["0.0.0.0", "::", "*", ""].contains(wwwAddress) {
            let ipv4 = isIPv4(wwwAddress) ? wwwAddress : environment.resolveIPv4(wwwAddress)
            if ipv4 != nil { return NodeAddress(host: wwwAddress, ipv4: ipv4, port: wwwPort, source: .wwwAddress) }
        }
        if let name = environment.hostName(), !name.isEmpty, let ipv4 = environment.resolveIPv4(name) {
            return NodeAddress(host: name, ipv4: ipv4, port: wwwPort, source: .hostname)
        }
        if let last = environment.interfaceIPv4s().last(where: { !$0.hasPrefix("127.") }) {
            return NodeAddress(host: last, ipv4: last, port: wwwPort, source: .interface)
        }
        return nil
    }

    public static func isIPv4(_ text: String) -> Bool {
        var address = in_addr()
        return inet_pton(AF_INET, text, &address) == 1
    }

    static func systemHostName() -> String? {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count) == 0 else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func systemResolveIPv4(_ name: String) -> String? {
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(name, nil, &hints, &result) == 0, let first = result else { return nil }
        defer { freeaddrinfo(result) }
        return first.pointee.ai_addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { ipv4String($0.pointee.sin_addr) }
    }

    static func systemInterfaceIPv4s() -> [String] {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return [] }
        defer { freeifaddrs(list) }
        var addresses: [String] = []
        var cursor = list
        while let entry = cursor {
            if let address = entry.pointee.ifa_addr, address.pointee.sa_family == sa_family_t(AF_INET) {
                let ip = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { ipv4String($0.pointee.sin_addr) }
                addresses.append(ip)
            }
            cursor = entry.pointee.ifa_next
        }
        return addresses
    }

    static func ipv4String(_ address: in_addr) -> String {
        var address = address
        var buffer = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        inet_ntop(AF_INET, &address, &buffer, socklen_t(buffer.count))
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

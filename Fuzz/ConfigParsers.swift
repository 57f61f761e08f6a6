// libFuzzer target: every configuration parser on arbitrary text. Any crash is a bug: bad input
// must always come back as a ConfigurationError.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfigParsers(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    _ = try? LoadBalancerConfiguration(parsing: text, path: "load-balancer", baseDirectory: "/etc/drover",
                                       pluginKeys: ["user-hash-balance-factor", "custom-balancer-script"])
    _ = try? ServerConfiguration(parsing: text, path: "rserver.conf", baseDirectory: "/etc/drover")
    _ = try? FileLocksConfiguration(parsing: text, path: "file-locks", baseDirectory: "/etc/drover")
    _ = try? DatabaseConfiguration(parsing: text, path: "database.conf", baseDirectory: "/etc/drover", defaultDirectory: "/var/lib/drover")
    return 0
}

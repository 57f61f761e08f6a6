import Foundation

/// An address or a network of them (`10.0.0.5`, `10.0.0.0/8`, `fd00::/8`), as operators list
/// them in `metrics-allowed-addresses`.
public struct AddressRange: Sendable, Equatable, CustomStringConvertible {
    let bytes: [UInt8]
    let prefixLength: Int
    public let description: String

    /// Reads `text`; nil when it is not an IPv4 or IPv6 address with an optional `/prefix`.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let bytes = Self.bytes(of: String(parts[0])) else { return nil }
        let length: Int
        if parts.count == 2 {
            guard let given = Int(parts[1]), (0...bytes.count * 8).contains(given) else { return nil }
            length = given
        } else {
            length = bytes.count * 8
        }
        self.bytes = bytes
        prefixLength = length
        description = text
    }

    /// Whether `address` (as a socket reports it; an IPv4-mapped IPv6 address counts as its
    /// IPv4 address) lies in the range.
    public func contains(_ address: String) -> Bool {
        var address = address
        if address.lowercased().hasPrefix("::ffff:"), address.contains(".") { address = String(address.dropFirst(7)) }
        guard let other = Self.bytes(of: address), other.count == bytes.count else { return false }
        var left = prefixLength
        for (mine, theirs) in zip(bytes, other) where left > 0 {
            let mask: UInt8 = left >= 8 ? 0xFF : ~(0xFF >> UInt8(left))
            if mine & mask != theirs & mask { return false }
            left -= 8
        }
        return true
    }

    static func bytes(of address: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, address, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, address, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }
}

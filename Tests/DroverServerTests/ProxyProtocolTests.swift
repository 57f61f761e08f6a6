@testable import DroverServer
import Testing

/// The PROXY protocol header a trusted TCP load balancer sends (`www-proxy-protocol`).
@Suite struct ProxyProtocolTests {
    func parse(_ text: String) -> ProxyProtocolHandler.Parse { ProxyProtocolHandler.parse(Array(text.utf8)) }

    @Test func versionOneNamesTheClientOrNobody() {
        #expect(parse("PROXY TCP4 203.0.113.9 10.0.0.1 5555 443\r\nGET /") == .header(length: 42, client: "203.0.113.9"))
        #expect(parse("PROXY TCP6 2001:db8::7 2001:db8::1 5555 443\r\n") == .header(length: 45, client: "2001:db8::7"))
        #expect(parse("PROXY UNKNOWN\r\n") == .header(length: 15, client: nil))
        #expect(parse("PROXY TCP4 203.0.113") == .needMore)
        #expect(parse("PRO") == .needMore)
    }

    @Test func aMalformedHeaderClosesTheConnection() {
        #expect(parse("GET / HTTP/1.1\r\n\r\n") == .invalid)
        #expect(parse("PROXY TCP4 not-an-address 10.0.0.1 5555 443\r\n") == .invalid)
        #expect(parse("PROXY TCP4 203.0.113.9 10.0.0.1 5555 443\n") == .invalid, "CRLF only")
        #expect(parse("PROXY TCP4 203.0.113.9 10.0.0.1 99999 443\r\n") == .invalid)
        #expect(parse("PROXY " + String(repeating: "x", count: 200)) == .invalid, "longer than any header")
    }

    @Test func versionTwoIPv4AndLocal() {
        let signature = ProxyProtocolHandler.v2Signature
        let ipv4 = signature + [0x21, 0x11, 0, 12, 198, 51, 100, 4, 10, 0, 0, 1, 0x15, 0xb3, 1, 187]
        #expect(ProxyProtocolHandler.parse(ipv4 + Array("GET".utf8)) == .header(length: 28, client: "198.51.100.4"))
        #expect(ProxyProtocolHandler.parse(signature + [0x20, 0x00, 0, 0]) == .header(length: 16, client: nil))
        #expect(ProxyProtocolHandler.parse(Array(ipv4.prefix(20))) == .needMore)
        #expect(ProxyProtocolHandler.parse(signature + [0x31, 0x11, 0, 12]) == .invalid, "version 3")
    }
}

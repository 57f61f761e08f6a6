@testable import DroverServer
import NIOHTTP1
import Testing

@Suite struct ProxyRoutingTests {
    @Test(arguments: [
        ("/s/abc/count", "abc"), ("/s/abc", "abc"), ("/s/abc?x=1", "abc"), ("/s/abc/", "abc"),
        ("/s/0123456789abcdef/echo/deeper?q=/s/x", "0123456789abcdef"),
        ("/s/", nil), ("/s", nil), ("/s//x", nil), ("/s/?x", nil), ("/api/sessions", nil), ("/sx/abc", nil), ("s/abc", nil), ("", nil),
    ] as [(String, String?)])
    func theSessionIDIsThePathSegmentAfterS(uri: String, id: String?) {
        #expect(SessionProxyResolver.sessionID(HTTPRequestHead(version: .http1_1, method: .GET, uri: uri)) == id)
    }
}

@testable import DroverServer
import NIOHTTP1
import Testing

@Suite struct ProxyRoutingTests {
    static let id = "0123456789abcdef0123456789abcdef"

    @Test(arguments: [
        ("/s/\(id)/count", id), ("/s/\(id)", id), ("/s/\(id)?x=1", id), ("/s/\(id)/", id),
        ("/s/\(id)/echo/deeper?q=/s/x", id),
        ("/s/", nil), ("/s", nil), ("/s//x", nil), ("/s/?x", nil), ("/api/sessions", nil), ("/sx/\(id)", nil), ("s/\(id)", nil), ("", nil),
        // Not of Drover's form: refused before any lookup.
        ("/s/abc/count", nil), ("/s/\(id.uppercased())/", nil), ("/s/\(id.dropLast())/", nil), ("/s/\(id)0/", nil),
        ("/s/..%2f..%2fetc/", nil), ("/s/\(id.dropLast())g/", nil), ("/s/' OR 1=1 --/", nil),
    ] as [(String, String?)])
    func theSessionIDIsThePathSegmentAfterS(uri: String, id: String?) {
        #expect(SessionProxyResolver.sessionID(HTTPRequestHead(version: .http1_1, method: .GET, uri: uri)) == id)
    }
}

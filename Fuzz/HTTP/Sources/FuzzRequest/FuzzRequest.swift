import DroverTesting

// libFuzzer target: arbitrary bytes as what a client sends a node, read by the client request
// framer (`ClientRequestFramer`), where request smuggling would live. The first byte chooses the
// size of the reads the bytes arrive in; the rest is the input. A finding is a crash, or:
// - the same bytes read in other pieces making other requests, or an error in one and not the other;
// - a request the framer reads whole that NIO's own parser (llhttp, `HTTPRequestDecoder`) reads
//   otherwise (another method, target, field, body or trailer), or does not read at all: two
//   readers of one request disagreeing about what it is or where it ends.
// The framer may refuse what llhttp reads (it is stricter: a second space in the request line,
// say); it may not read what llhttp refuses.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRequest(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 1 else { return 0 }
    let piece = Int(data[0]) + 1
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    let whole = RequestReading.framer(bytes, split: bytes.count)
    let pieces = RequestReading.framer(bytes, split: piece)
    guard whole.parts == pieces.parts, (whole.failed == nil) == (pieces.failed == nil) else {
        fatalError("read whole and in \(piece)-byte pieces, one input gave two readings:\n\(whole)\n---\n\(pieces)")
    }
    let requests = whole.wholeRequests
    guard !requests.isEmpty else { return 0 }
    let llhttp = RequestReading.decoder(bytes)
    guard llhttp.parts.count >= requests.count, Array(llhttp.parts.prefix(requests.count)) == requests else {
        fatalError("llhttp reads these requests otherwise:\n\(whole)\n--- llhttp:\n\(llhttp)")
    }
    return 0
}

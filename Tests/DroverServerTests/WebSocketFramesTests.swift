@testable import DroverServer
import NIOCore
import Testing

/// ``WebSocketFrames`` finds where the session's frames end however the bytes are cut.
@Suite struct WebSocketFramesTests {
    /// A server's frame: `opcode`, `length` payload bytes, the 16- or 64-bit length forms past 125.
    func frame(opcode: UInt8 = 0x1, length: Int, masked: Bool = false) -> [UInt8] {
        var head: [UInt8] = [0x80 | opcode]
        let mask: UInt8 = masked ? 0x80 : 0
        if length < 126 {
            head.append(mask | UInt8(length))
        } else if length < 65_536 {
            head += [mask | 126, UInt8(length >> 8), UInt8(length & 0xff)]
        } else {
            head.append(mask | 127)
            head += (0..<8).reversed().map { UInt8((length >> ($0 * 8)) & 0xff) }
        }
        if masked { head += [1, 2, 3, 4] }
        return head + [UInt8](repeating: 0x61, count: length)
    }

    @Test func everyCutOfAStreamOfFramesFindsTheirEnds() {
        let frames = [frame(length: 5), frame(length: 300), frame(length: 0), frame(opcode: 0x2, length: 70_000), frame(length: 9, masked: true)]
        let stream = frames.flatMap { $0 }
        let ends = Set(frames.reduce(into: [0]) { $0.append($0.last! + $1.count) })
        // Cut into pieces of every size from 1 to 17 bytes: at each piece's end the follower knows
        // whether a frame ends there.
        for size in 1...17 {
            var follower = WebSocketFrames()
            var offset = 0
            while offset < stream.count {
                let piece = stream[offset..<min(offset + size, stream.count)]
                follower.pass(ByteBuffer(bytes: piece))
                offset += piece.count
                #expect(follower.atBoundary == ends.contains(offset), "size \(size), at \(offset)")
            }
            #expect(!follower.closeSeen)
        }
    }

    @Test func aCloseFrameOfTheSessionsIsSeenAndTheRestartCloseIsOneWholeFrame() throws {
        var follower = WebSocketFrames()
        follower.pass(ByteBuffer(bytes: frame(length: 3) + frame(opcode: 0x8, length: 2)))
        #expect(follower.closeSeen && follower.atBoundary)
        // The node's own close: 1012 in the first two payload bytes, a frame that ends whole.
        let close = Array(WebSocketFrames.restartClose.readableBytesView)
        #expect(close[0] == 0x88 && Int(close[1]) == close.count - 2)
        #expect(UInt16(close[2]) << 8 | UInt16(close[3]) == 1012)
        var check = WebSocketFrames()
        check.pass(WebSocketFrames.restartClose)
        #expect(check.atBoundary && check.closeSeen)
    }
}

import NIOCore

/// Follows the frames a session sends down a WebSocket the node proxies (RFC 6455 §5.2), without
/// copying them: where each frame ends, and whether one was a close frame. When the session goes
/// away (it is suspended, moved, or quits) or the node stops, the node ends the WebSocket with a
/// close frame of its own, ``restartClose``, and it may only write one where a frame of the
/// session's ends. Only heads are read (2 to 14 bytes a frame); payloads are counted past.
struct WebSocketFrames {
    /// The head of the frame being read, while it is incomplete.
    private var head: [UInt8] = []
    /// Payload bytes of the current frame still to pass.
    private var payloadLeft = 0
    /// The session sent a close frame: the WebSocket is ending on its own terms.
    private(set) var closeSeen = false

    /// Whether the bytes passed so far end where a frame ends.
    var atBoundary: Bool { head.isEmpty && payloadLeft == 0 }

    /// Notes `buffer`'s readable bytes, on their way to the client.
    mutating func pass(_ buffer: ByteBuffer) {
        var index = buffer.readerIndex
        let end = buffer.writerIndex
        while index < end {
            if payloadLeft > 0 {
                let skipped = min(payloadLeft, end - index)
                payloadLeft -= skipped
                index += skipped
                continue
            }
            head.append(buffer.getInteger(at: index, as: UInt8.self) ?? 0)
            index += 1
            if let (opcode, length) = Self.parse(head) {
                if opcode == 0x8 { closeSeen = true }
                payloadLeft = length
                head.removeAll(keepingCapacity: true)
            }
        }
    }

    /// A complete head's opcode and payload length; nil while more of the head is to come.
    static func parse(_ head: [UInt8]) -> (opcode: UInt8, length: Int)? {
        guard head.count >= 2 else { return nil }
        let short = Int(head[1] & 0x7f)
        let extended = short == 126 ? 2 : short == 127 ? 8 : 0
        let masked = head[1] & 0x80 != 0
        guard head.count == 2 + extended + (masked ? 4 : 0) else { return nil }
        let length = extended == 0 ? UInt64(short) : head[2..<(2 + extended)].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return (head[0] & 0x0f, Int(clamping: length))
    }

    /// The close code the node ends a WebSocket with when its session went away or the node is
    /// stopping: 1012, "Service Restart" (RFC 6455's registry). A client reconnects on it, and
    /// reaches the session where it runs now (README, "Upgrading").
    static let restartCode: UInt16 = 1012

    /// The close frame (unmasked, as a server sends it) with ``restartCode`` and a reason.
    static let restartClose: ByteBuffer = {
        let reason = Array("session moved or node restarting; reconnect".utf8)
        var frame = ByteBuffer()
        frame.writeBytes([0x88, UInt8(2 + reason.count)])
        frame.writeInteger(restartCode)
        frame.writeBytes(reason)
        return frame
    }()
}

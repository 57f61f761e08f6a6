"""Opens N WebSocket connections through a Drover node to a demo session, exchanges one message
on each, holds them, closes them, and prints the node's resident memory (VmRSS) idle, at peak
and after; CYCLES rounds, to tell a leak (grows every round) from memory the allocator keeps.
Usage: websockets.py HOST PORT PATH NODE_PID COUNT [CYCLES]"""
import asyncio, base64, os, sys, time

host, port, path, pid, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
cycles = int(sys.argv[6]) if len(sys.argv) > 6 else 1

def rss_mb():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0

async def open_ws():
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head[:40]
    msg = b"ping"
    mask = os.urandom(4)
    writer.write(bytes([0x81, 0x80 | len(msg)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(msg)))
    echo = await reader.readexactly(2 + len(msg))
    assert echo[2:] == msg
    return reader, writer

async def main():
    idle = rss_mb()
    for cycle in range(1, cycles + 1):
        conns = []
        for start in range(0, count, 100):
            conns += await asyncio.gather(*(open_ws() for _ in range(min(100, count - start))))
        await asyncio.sleep(2)
        peak = rss_mb()
        for reader, writer in conns:
            writer.close()
        await asyncio.sleep(6)
        after = rss_mb()
        print(f"cycle={cycle} websockets={len(conns)} idle_mb={idle:.1f} peak_mb={peak:.1f} after_mb={after:.1f} "
              f"after_vs_idle={(after - idle) / idle * 100:+.1f}%")

asyncio.run(main())

"""Time to a kernel's first output in JupyterLab: start a kernel over the REST API (with the
_xsrf cookie as X-XSRFToken), open its WebSocket, run print(6*7), wait for the stream message
with 42. Over a Unix socket (the Lab reached directly) or TCP (through a Drover node), with a
small HTTP and WebSocket client of its own so both paths run the same code.
Usage: first_output.py ROUNDS BASE DIRECT_SOCKET HOST:PORT(owner) HOST:PORT(other) [COOKIE]"""
import base64, json, os, socket, statistics, struct, sys, time, uuid

def connect(target):
    if target.startswith("/"):
        s = socket.socket(socket.AF_UNIX)
        s.connect(target)
        return s, "localhost"
    host, port = target.rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s, target

def read_head(s, buffer=b""):
    while b"\r\n\r\n" not in buffer:
        chunk = s.recv(65536)
        if not chunk: raise IOError("closed")
        buffer += chunk
    head, rest = buffer.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = {}
    cookies = []
    for line in lines[1:]:
        name, value = line.split(":", 1)
        if name.lower() == "set-cookie": cookies.append(value.strip())
        headers[name.lower()] = value.strip()
    return int(lines[0].split()[1]), headers, cookies, rest

def request(target, method, path, cookie, headers=(), body=b""):
    s, host = connect(target)
    extra = "".join(f"{n}: {v}\r\n" for n, v in headers)
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nContent-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n".encode() + body)
    status, headers, cookies, rest = read_head(s)
    while True:
        chunk = s.recv(65536)
        if not chunk: break
        rest += chunk
    s.close()
    if headers.get("transfer-encoding") == "chunked":
        body, data = b"", rest
        while True:
            size, data = data.split(b"\r\n", 1)
            n = int(size, 16)
            if n == 0: break
            body, data = body + data[:n], data[n + 2:]
        rest = body
    return status, cookies, rest

def frame(text):
    data = text.encode()
    mask = os.urandom(4)
    n = len(data)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else bytes([0x80 | 127]) + struct.pack(">Q", n))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))

def frames(s, buffer):
    while True:
        while len(buffer) < 2:
            buffer += s.recv(65536)
        n = buffer[1] & 0x7F
        offset = 2
        if n == 126: n, offset = struct.unpack(">H", buffer[2:4])[0], 4
        elif n == 127: n, offset = struct.unpack(">Q", buffer[2:10])[0], 10
        while len(buffer) < offset + n:
            buffer += s.recv(65536)
        yield buffer[0] & 0x0F, buffer[offset:offset + n]
        buffer = buffer[offset + n:]

def first_output(target, base, cookie, xsrf):
    started = time.perf_counter()
    status, _, body = request(target, "POST", base + "api/kernels", cookie,
                              [("X-XSRFToken", xsrf), ("Content-Type", "application/json")], b'{"name":"python3"}')
    assert status == 201, (status, body[:200])
    kernel = json.loads(body)["id"]
    s, host = connect(target)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(f"GET {base}api/kernels/{kernel}/channels HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nUpgrade: websocket\r\n"
              f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    status, _, _, rest = read_head(s)
    assert status == 101, status
    msg_id = str(uuid.uuid4())
    s.sendall(frame(json.dumps({"header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "bench", "session": str(uuid.uuid4()),
                                           "date": "2026-01-01T00:00:00Z", "version": "5.3"}, "parent_header": {}, "metadata": {},
                                "content": {"code": "print(6*7)", "silent": False, "store_history": False, "user_expressions": {},
                                            "allow_stdin": False, "stop_on_error": True}, "channel": "shell", "buffers": []})))
    for opcode, payload in frames(s, rest):
        if opcode != 1: continue
        message = json.loads(payload)
        if message.get("parent_header", {}).get("msg_id") == msg_id and message.get("msg_type") == "stream":
            assert message["content"]["text"].strip() == "42"
            took = time.perf_counter() - started
            break
    s.close()
    request(target, "DELETE", base + f"api/kernels/{kernel}", cookie, [("X-XSRFToken", xsrf)])
    return took

rounds, base, direct, owner, other = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
drover_cookie = sys.argv[6] if len(sys.argv) > 6 else ""
paths = {"direct (Unix socket)": direct, "through the owning node": owner, "through the other node": other}
sessions = {}
for name, target in paths.items():
    cookie = drover_cookie if not target.startswith("/") else ""
    status, cookies, _ = request(target, "GET", base + "lab", cookie)
    assert status == 200, (name, status)
    xsrf = next(c.split(";")[0].split("=", 1)[1] for c in cookies if c.startswith("_xsrf="))
    sessions[name] = (target, ("; ".join(filter(None, [cookie, "_xsrf=" + xsrf]))), xsrf)
    first_output(target, base, sessions[name][1], xsrf)  # warm-up: the kernel's first start loads its modules
times = {name: [] for name in paths}
for _ in range(rounds):
    for name, (target, cookie, xsrf) in sessions.items():  # alternating, so drift hits every path alike
        times[name].append(first_output(target, base, cookie, xsrf))
direct_median = statistics.median(times["direct (Unix socket)"])
print(f"{'path':28} {'median s':>9} {'p90 s':>7} {'min s':>7}  vs direct")
for name, values in times.items():
    values.sort()
    p90 = values[min(len(values) - 1, int(round(0.9 * (len(values) - 1))))]
    print(f"{name:28} {statistics.median(values):9.3f} {p90:7.3f} {values[0]:7.3f}  {statistics.median(values) / direct_median:.3f}x")

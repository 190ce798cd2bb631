#!/usr/bin/env python3
"""A TCP proxy that injects faults, for tests on loopback (standard library only).

    faultproxy.py --listen PORT --target HOST:PORT [faults...]

Faults (each fires at most --times times in all, default once; 0 means every time):
  --drop-reply-containing TEXT   close the client's connection, unforwarded, on the first chunk
                                 from the server that contains TEXT (a reply lost on its way back:
                                 the server ran the command, the client never hears of it)
  --drop-request-after BYTES     close the connection once BYTES from the client were forwarded
                                 (a connection reset in the middle of a long pipeline)
  --delay-ms MS                  hold every chunk, both ways, this long before forwarding it
  --bandwidth BYTES              forward at most BYTES per second each way, per connection (0: no limit)
  --bind ADDRESS                 listen on this address (default 127.0.0.1; a test host's own address
                                 inside a network namespace)
  --control PORT                 accept commands on 127.0.0.1:PORT, one per line, each answered "ok":
                                   stall on|off      hold all traffic both ways, connections open (a
                                                     peer that stops answering without closing)
                                   delay MS          set --delay-ms
                                   bandwidth BYTES   set --bandwidth
                                   reset-next-reply  forward half of the next chunk from the server,
                                                     then reset the client's connection (RST)
                                   drop-next-reply   close the client's connection on the next chunk
                                                     from the server, unforwarded
                                   stats             answer "connections N stalled-chunks N" instead

It prints "listening on PORT" once it accepts connections, and one line per fault it fires.
Run it for the project's own servers only: it connects to --target and nowhere else.
"""
import argparse
import asyncio
import socket
import struct
import sys


class Faults:
    def __init__(self, args):
        self.marker = args.drop_reply_containing.encode() if args.drop_reply_containing else None
        self.drop_after = args.drop_request_after
        self.delay = args.delay_ms / 1000.0
        self.bandwidth = args.bandwidth
        self.times = args.times
        self.fired = 0
        self.stalled = False
        self.reset_next = False
        self.drop_next = False
        self.connections = 0
        self.stalled_chunks = 0

    def may_fire(self):
        return self.times == 0 or self.fired < self.times

    def fire(self, what):
        self.fired += 1
        print(f"fault: {what}", flush=True)


async def pipe(reader, writer, faults, direction, state, peer_writer):
    # Chunks are read as they come and stamped; the forwarding below holds each until its own
    # arrival plus the delay, so a delay adds latency without limiting throughput.
    loop = asyncio.get_running_loop()
    chunks = asyncio.Queue()

    async def read_all():
        try:
            while True:
                chunk = await reader.read(65536)
                await chunks.put((loop.time(), chunk))
                if not chunk:
                    break
        except (ConnectionError, OSError):
            await chunks.put((loop.time(), b""))

    reading = asyncio.ensure_future(read_all())
    tail = b""
    try:
        while True:
            arrived, chunk = await chunks.get()
            if not chunk:
                break
            if faults.stalled:
                faults.stalled_chunks += 1
                while faults.stalled:
                    await asyncio.sleep(0.01)
            if faults.delay:
                wait = arrived + faults.delay - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            if faults.bandwidth:
                # In slices of a twentieth of a second's worth, so a rate is a rate, not bursts.
                step = max(1, faults.bandwidth // 20)
                for start in range(0, len(chunk), step):
                    piece = chunk[start:start + step]
                    await asyncio.sleep(len(piece) / faults.bandwidth)
                    if start + step < len(chunk):
                        writer.write(piece)
                        await writer.drain()
                        state["up" if direction == "up" else "down"] += len(piece)
                chunk = chunk[(len(chunk) - 1) // step * step:]
            if direction == "down" and faults.drop_next:
                faults.drop_next = False
                faults.fire("dropped the next reply (control)")
                state["dropped"] = True
                break
            if direction == "down" and faults.reset_next:
                faults.reset_next = False
                writer.write(chunk[: max(1, len(chunk) // 2)])
                await writer.drain()
                faults.fire("reset the connection in the middle of a reply (control)")
                state["dropped"] = True
                reset(writer)
                break
            if direction == "down" and faults.marker and faults.may_fire():
                window = tail + chunk
                if faults.marker in window:
                    faults.fire("dropped a reply containing the marker")
                    state["dropped"] = True
                    break
                tail = window[-len(faults.marker):]
            if direction == "up" and faults.drop_after is not None and faults.may_fire():
                if state["up"] + len(chunk) >= faults.drop_after:
                    keep = max(0, faults.drop_after - state["up"])
                    writer.write(chunk[:keep])
                    await writer.drain()
                    faults.fire(f"dropped the connection after {faults.drop_after} bytes from the client")
                    state["dropped"] = True
                    break
            state["up" if direction == "up" else "down"] += len(chunk)
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        reading.cancel()
        for w in (writer, peer_writer):
            try:
                w.close()
            except Exception:
                pass


def reset(writer):
    """Closes with RST rather than FIN: SO_LINGER with a zero timeout."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


async def control(reader, writer, faults):
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            try:
                words = line.decode().split()
            except UnicodeDecodeError:
                words = ["(not UTF-8)"]
            answer = "ok"
            if words[:2] == ["stall", "on"]:
                faults.stalled = True
            elif words[:2] == ["stall", "off"]:
                faults.stalled = False
            elif words[:1] == ["delay"] and len(words) == 2 and words[1].replace(".", "", 1).isdigit():
                faults.delay = float(words[1]) / 1000.0
            elif words[:1] == ["bandwidth"] and len(words) == 2 and words[1].isdigit():
                faults.bandwidth = int(words[1])
            elif words == ["reset-next-reply"]:
                faults.reset_next = True
            elif words == ["drop-next-reply"]:
                faults.drop_next = True
            elif words == ["stats"]:
                answer = f"connections {faults.connections} stalled-chunks {faults.stalled_chunks}"
            else:
                answer = "error: unknown command"
            print(f"control: {' '.join(words)}", flush=True)
            writer.write((answer + "\n").encode())
            await writer.drain()
    except (ConnectionError, OSError, ValueError):
        pass
    finally:
        writer.close()


async def handle(client_reader, client_writer, target, faults):
    try:
        server_reader, server_writer = await asyncio.open_connection(*target)
    except OSError:
        client_writer.close()
        return
    faults.connections += 1
    state = {"up": 0, "down": 0, "dropped": False}
    await asyncio.gather(
        pipe(client_reader, server_writer, faults, "up", state, client_writer),
        pipe(server_reader, client_writer, faults, "down", state, server_writer),
    )


async def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--drop-reply-containing")
    parser.add_argument("--drop-request-after", type=int)
    parser.add_argument("--delay-ms", type=float, default=0)
    parser.add_argument("--times", type=int, default=1)
    parser.add_argument("--bandwidth", type=int, default=0)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--control", type=int)
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("faultproxy: --target must be a loopback address")
    faults = Faults(args)
    server = await asyncio.start_server(lambda r, w: handle(r, w, (host, int(port)), faults), args.bind, args.listen)
    if args.control:
        await asyncio.start_server(lambda r, w: control(r, w, faults), "127.0.0.1", args.control)
    print(f"listening on {args.listen}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass

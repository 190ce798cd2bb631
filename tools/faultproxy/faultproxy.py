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

It prints "listening on PORT" once it accepts connections, and one line per fault it fires.
Run it for the project's own servers only: it connects to --target and nowhere else.
"""
import argparse
import asyncio
import sys


class Faults:
    def __init__(self, args):
        self.marker = args.drop_reply_containing.encode() if args.drop_reply_containing else None
        self.drop_after = args.drop_request_after
        self.delay = args.delay_ms / 1000.0
        self.times = args.times
        self.fired = 0

    def may_fire(self):
        return self.times == 0 or self.fired < self.times

    def fire(self, what):
        self.fired += 1
        print(f"fault: {what}", flush=True)


async def pipe(reader, writer, faults, direction, state, peer_writer):
    tail = b""
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            if faults.delay:
                await asyncio.sleep(faults.delay)
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
        for w in (writer, peer_writer):
            try:
                w.close()
            except Exception:
                pass


async def handle(client_reader, client_writer, target, faults):
    try:
        server_reader, server_writer = await asyncio.open_connection(*target)
    except OSError:
        client_writer.close()
        return
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
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("faultproxy: --target must be a loopback address")
    faults = Faults(args)
    server = await asyncio.start_server(lambda r, w: handle(r, w, (host, int(port)), faults), "127.0.0.1", args.listen)
    print(f"listening on {args.listen}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass

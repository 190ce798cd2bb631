#!/usr/bin/env python3
"""A stand-in for the remote provider APIs Switchyard calls, for tests and benchmarks.

It follows the documented request and response shapes of:
  * the OpenAI-compatible API (OpenRouter and friends): GET /v1/models, POST /v1/chat/completions
    (with and without "stream": true Server-Sent Events), /v1/completions, /v1/embeddings (with
    "dimensions" up to 8 and "encoding_format" float or base64), /v1/images/generations; errors as
    {"error": {"message", "type", "code"}};
  * Leonardo: POST /api/rest/v1/generations -> {"sdGenerationJob": {"generationId"}}, then
    GET /api/rest/v1/generations/<id> -> {"generations_by_pk": {"status": PENDING|COMPLETE|FAILED, ...}};
  * Runware: POST /v1 with a JSON array of tasks ("imageInference", "authentication") ->
    {"data": [...]} or {"errors": [...]}.

Faults are injected through POST /_standin/faults with a JSON list; each fault applies to the next
`times` requests whose path starts with `path`: latency_ms, status (+ retry_after, retry_after_ms,
body), reset (close without answering), truncate (announce more bytes than sent, then close),
malformed (200 with broken JSON), stream_error (an error event in the middle of a stream),
slow_stream_ms (pause between stream events); for size limits: body_bytes (200 with a chat
completion padded to that many bytes), gzip_bomb (the same, gzip-compressed, sent with
Content-Encoding: gzip whatever the client asked: a few KB that expand to that many bytes),
sse_event_bytes (a streamed chat with one event padded to about that many bytes). GET
/_standin/stats reports connections, requests, the last Authorization seen (masked), and how
many bytes the last sized fault wrote before it finished or the client went away
(last_fault_body). Standard library only.
"""
import argparse
import base64
import gzip
import json
import random
import socket
import ssl
import struct
import sys
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATE = {"connections": 0, "requests": 0, "by_path": {}, "faults": [], "auth": None, "gzip_responses": 0,
         "leonardo": {}, "accept_encoding": None, "last_fault_body": None}
PIECE = 64 * 1024


def take_fault(path):
    with LOCK:
        for fault in STATE["faults"]:
            if path.startswith(fault.get("path", "")) and fault.get("times", 1) > 0:
                fault["times"] = fault.get("times", 1) - 1
                return dict(fault)
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "standin/1"

    def setup(self):
        super().setup()
        with LOCK:
            STATE["connections"] += 1

    def log_message(self, fmt, *args):  # quiet
        pass

    # ---- helpers
    def body_json(self):
        raw = self.raw_body
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return ValueError("body is not JSON")

    def send_json(self, status, obj, extra=None):
        data = json.dumps(obj).encode()
        accept = self.headers.get("Accept-Encoding") or ""
        headers = {"Content-Type": "application/json"}
        if "gzip" in accept and len(data) > 512:
            data = gzip.compress(data)
            headers["Content-Encoding"] = "gzip"
            with LOCK:
                STATE["gzip_responses"] += 1
        headers.update(extra or {})
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def openai_error(self, status, message, kind="invalid_request_error", code=None, extra=None):
        self.send_json(status, {"error": {"message": message, "type": kind, "code": code}}, extra)

    def check_key(self, header_value):
        expected = self.server.api_key
        if expected is None:
            return True
        return header_value == "Bearer " + expected

    def apply_fault(self, fault):
        """Returns True when the fault already answered (or dropped) the request."""
        if not fault:
            return False
        if fault.get("latency_ms"):
            time.sleep(fault["latency_ms"] / 1000)
        if fault.get("reset"):
            self.close_connection = True
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            except OSError:
                pass
            self.connection.close()
            return True
        if fault.get("truncate"):
            body = b'{"id": "cut", "choices": [{"message": {"content": "trunc'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) + 100))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return True
        if fault.get("malformed"):
            body = b'{"id": "x", "choices": [ {"message": '
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return True
        if fault.get("body_bytes"):
            self.padded_completion(fault["body_bytes"], compress=False)
            return True
        if fault.get("gzip_bomb"):
            self.padded_completion(fault["gzip_bomb"], compress=True)
            return True
        if fault.get("status"):
            extra = {}
            if "retry_after" in fault:
                extra["Retry-After"] = str(fault["retry_after"])
            if "retry_after_ms" in fault:
                extra["retry-after-ms"] = str(fault["retry_after_ms"])
            body = fault.get("body") or {"error": {"message": "injected %d" % fault["status"], "type": "server_error",
                                                   "code": fault["status"]}}
            self.send_json(fault["status"], body, extra)
            return True
        return False

    def write_counted(self, pieces):
        """Writes the byte strings of `pieces` (an iterable) and records in last_fault_body how many
        bytes went out before the end or before the client went away."""
        record = {"bytes_sent": 0, "finished": False, "broken": False}
        with LOCK:
            STATE["last_fault_body"] = record
        try:
            for piece in pieces:
                self.wfile.write(piece)
                with LOCK:
                    record["bytes_sent"] += len(piece)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True
            with LOCK:
                record["broken"] = True
        with LOCK:
            record["finished"] = True

    def padded_completion(self, size, compress):
        """A chat completion whose content is padded so that the whole body is `size` bytes."""
        head = (b'{"id": "chatcmpl-big", "object": "chat.completion", "created": 0, "model": "standin-chat", '
                b'"choices": [{"index": 0, "message": {"role": "assistant", "content": "')
        tail = b'"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}'
        pad = max(0, int(size) - len(head) - len(tail))

        def plain():
            yield head
            left = pad
            while left > 0:
                yield b"x" * min(PIECE, left)
                left -= PIECE
            yield tail

        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if compress:
            packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip wrapper
            data = b"".join(packer.compress(piece) for piece in plain()) + packer.flush()
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.write_counted([data])
        else:
            self.send_header("Content-Length", str(len(head) + pad + len(tail)))
            self.end_headers()
            self.write_counted(plain())

    # ---- routing
    def route(self, method):
        # Read the body first: a fault that answers early must not leave it in the connection.
        length = int(self.headers.get("Content-Length") or 0)
        self.raw_body = self.rfile.read(length) if length else b""
        path = self.path.split("?")[0]
        with LOCK:
            STATE["requests"] += 1
            STATE["by_path"][path] = STATE["by_path"].get(path, 0) + 1
            auth = self.headers.get("Authorization")
            if auth:
                STATE["auth"] = auth[:10] + "..."
            STATE["accept_encoding"] = self.headers.get("Accept-Encoding")
        if path.startswith("/_standin/"):
            return self.control(method, path)
        fault = take_fault(path)
        if self.apply_fault(fault):
            return
        if path.startswith("/api/rest/v1/generations"):
            return self.leonardo(method, path)
        if path == "/v1" and method == "POST":
            return self.runware()
        if not self.check_key(self.headers.get("Authorization")):
            return self.openai_error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        if path == "/v1/models" and method == "GET":
            models = [{"id": "standin-chat", "object": "model", "created": 0, "owned_by": "standin"},
                      {"id": "standin-embed", "object": "model", "created": 0, "owned_by": "standin"}]
            models += [{"id": "padding-%d" % i, "object": "model", "created": 0, "owned_by": "standin"} for i in range(20)]
            return self.send_json(200, {"object": "list", "data": models})
        if method != "POST":
            return self.openai_error(404, "Unknown request URL: %s %s" % (method, path), code="unknown_url")
        body = self.body_json()
        if isinstance(body, ValueError) or not isinstance(body, dict):
            return self.openai_error(400, "We could not parse the JSON body of your request.")
        if "model" not in body:
            return self.openai_error(400, "you must provide a model parameter")
        if path == "/v1/chat/completions":
            return self.chat(body, fault)
        if path == "/v1/completions":
            text = "echo: " + str(body.get("prompt", ""))
            return self.send_json(200, {"id": "cmpl-" + uuid.uuid4().hex[:12], "object": "text_completion",
                                        "created": int(time.time()), "model": body["model"],
                                        "choices": [{"text": text, "index": 0, "finish_reason": "stop", "logprobs": None}],
                                        "usage": usage(str(body.get("prompt", "")), text)})
        if path == "/v1/embeddings":
            inputs = body.get("input")
            if isinstance(inputs, str):
                inputs = [inputs]
            if not isinstance(inputs, list) or not inputs:
                return self.openai_error(400, "'input' is required")
            dims = body.get("dimensions", 8)
            if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 8:
                return self.openai_error(400, "Invalid value for 'dimensions': this model supports 1 to 8.", code="invalid_value")
            fmt = body.get("encoding_format", "float")
            if fmt not in ("float", "base64"):
                return self.openai_error(400, "Invalid value: '%s'. Supported values are: 'float' and 'base64'." % fmt,
                                         code="invalid_value")
            data = []
            for i, t in enumerate(inputs):
                numbers = vector(str(t))[:dims]
                if fmt == "base64":  # little-endian float32s, as the API sends them
                    numbers = base64.b64encode(struct.pack("<%df" % len(numbers), *numbers)).decode()
                data.append({"object": "embedding", "index": i, "embedding": numbers})
            tokens = sum(len(str(t).split()) for t in inputs)
            return self.send_json(200, {"object": "list", "data": data, "model": body["model"],
                                        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
        if path == "/v1/images/generations":
            n = int(body.get("n", 1))
            fmt = body.get("response_format", "url")
            if fmt not in ("url", "b64_json"):
                return self.openai_error(400, "Invalid value: '%s'. Supported values are: 'url' and 'b64_json'." % fmt,
                                         code="invalid_value")
            if fmt == "b64_json":
                data = [{"b64_json": base64.b64encode(b"standin image %d" % i).decode(), "revised_prompt": body.get("prompt")}
                        for i in range(n)]
            else:
                data = [{"url": "https://standin.invalid/images/%s.png" % uuid.uuid4().hex, "revised_prompt": body.get("prompt")}
                        for _ in range(n)]
            return self.send_json(200, {"created": int(time.time()), "data": data})
        return self.openai_error(404, "Unknown request URL: POST %s" % path, code="unknown_url")

    def chat(self, body, fault):
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self.openai_error(400, "'messages' must be a non-empty array")
        last = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        content = "echo: " + str(last)
        cid = "chatcmpl-" + uuid.uuid4().hex[:12]
        if not body.get("stream"):
            return self.send_json(200, {"id": cid, "object": "chat.completion", "created": int(time.time()),
                                        "model": body["model"],
                                        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                                     "finish_reason": "stop"}],
                                        "usage": usage(str(last), content)})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        pause = (fault or {}).get("slow_stream_ms", 0) / 1000

        def chunk(text):
            raw = text.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(raw), raw))
            self.wfile.flush()

        chunk(": OPENROUTER PROCESSING\n\n")
        if fault and fault.get("sse_event_bytes"):
            # One event whose data line is about sse_event_bytes long, written in pieces, then the
            # end of an ordinary stream.
            head = ("data: " + json.dumps({"id": cid, "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                                           "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                        "finish_reason": None}]})).encode()
            cut = head.index(b'"content": "') + len(b'"content": "')
            prefix, suffix = head[:cut], head[cut:] + b"\n\n"
            pad = max(0, int(fault["sse_event_bytes"]) - len(prefix) - len(suffix))

            def framed():
                yield b"%x\r\n%s\r\n" % (len(prefix), prefix)
                left = pad
                while left > 0:
                    piece = b"x" * min(PIECE, left)
                    left -= len(piece)
                    yield b"%x\r\n%s\r\n" % (len(piece), piece)
                yield b"%x\r\n%s\r\n" % (len(suffix), suffix)
                last = {"id": cid, "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                for text in ("data: " + json.dumps(last) + "\n\n", "data: [DONE]\n\n"):
                    yield b"%x\r\n%s\r\n" % (len(text.encode()), text.encode())
                yield b"0\r\n\r\n"

            self.write_counted(framed())
            return
        words = content.split(" ")
        for i, word in enumerate(words):
            if pause:
                time.sleep(pause)
            if fault and fault.get("stream_error") and i == len(words) // 2:
                chunk("data: " + json.dumps({"error": {"message": "injected mid-stream failure", "code": 502}}) + "\n\n")
                break
            delta = {"content": word if i == 0 else " " + word}
            if i == 0:
                delta["role"] = "assistant"
            chunk("data: " + json.dumps({"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
                                         "model": body["model"],
                                         "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}) + "\n\n")
            if i == 0:
                chunk(": keep-alive\n\n")
        else:
            chunk("data: " + json.dumps({"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
                                         "model": body["model"],
                                         "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                                         "usage": usage(str(last), content)}) + "\n\n")
            chunk("data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def leonardo(self, method, path):
        if not self.check_key(self.headers.get("Authorization")):
            return self.send_json(401, {"error": "Invalid authentication", "path": "$", "code": "invalid-jwt"})
        if method == "POST" and path == "/api/rest/v1/generations":
            body = self.body_json()
            if not isinstance(body, dict) or not body.get("prompt"):
                return self.send_json(400, {"error": "expected prompt", "path": "$.prompt", "code": "validation-failed"})
            gid = str(uuid.uuid4())
            n = int(body.get("num_images", 1))
            fail = "fail" in str(body.get("prompt"))
            with LOCK:
                STATE["leonardo"][gid] = {"polls": 0, "n": n, "prompt": body["prompt"], "fail": fail}
            return self.send_json(200, {"sdGenerationJob": {"generationId": gid, "apiCreditCost": 8}})
        if method == "GET":
            gid = path.rsplit("/", 1)[-1]
            with LOCK:
                job = STATE["leonardo"].get(gid)
                if job:
                    job["polls"] += 1
            if not job:
                return self.send_json(200, {"generations_by_pk": None})
            status = "PENDING"
            images = []
            if job["polls"] >= self.server.leonardo_polls:
                status = "FAILED" if job["fail"] else "COMPLETE"
                if not job["fail"]:
                    images = [{"id": str(uuid.uuid4()), "url": "https://cdn.standin.invalid/%s/%d.jpg" % (gid, i),
                               "nsfw": False} for i in range(job["n"])]
            return self.send_json(200, {"generations_by_pk": {"id": gid, "status": status, "prompt": job["prompt"],
                                                              "generated_images": images,
                                                              "createdAt": "2026-01-01T00:00:00.000"}})
        return self.send_json(404, {"error": "not found", "code": "not-found"})

    def runware(self):
        tasks = self.body_json()
        if not isinstance(tasks, list):
            return self.send_json(400, {"errors": [{"code": "invalidJSON", "message": "body must be an array of tasks"}]})
        authorised = self.check_key(self.headers.get("Authorization"))
        data, errors = [], []
        for task in tasks:
            if task.get("taskType") == "authentication":
                authorised = authorised or (self.server.api_key is not None and task.get("apiKey") == self.server.api_key)
        if not authorised:
            return self.send_json(401, {"errors": [{"code": "invalidApiKey", "message": "Invalid API key. Get one at https://my.runware.ai",
                                                    "taskType": "authentication"}]})
        for task in tasks:
            kind = task.get("taskType")
            if kind == "authentication":
                data.append({"taskType": "authentication", "connectionSessionUUID": str(uuid.uuid4())})
            elif kind == "imageInference":
                if not task.get("positivePrompt") or not task.get("taskUUID"):
                    errors.append({"code": "missingPositivePrompt", "message": "positivePrompt is required",
                                   "parameter": "positivePrompt", "taskType": kind, "taskUUID": task.get("taskUUID")})
                    continue
                for _ in range(int(task.get("numberResults", 1))):
                    image = str(uuid.uuid4())
                    data.append({"taskType": kind, "taskUUID": task["taskUUID"], "imageUUID": image,
                                 "imageURL": "https://im.standin.invalid/image/ws/2/ii/%s.jpg" % image, "cost": 0.0013})
            else:
                errors.append({"code": "unsupportedTaskType", "message": "unknown taskType", "taskType": kind,
                               "taskUUID": task.get("taskUUID")})
        if errors:
            return self.send_json(400, {"errors": errors, "data": data})
        return self.send_json(200, {"data": data})

    def control(self, method, path):
        if path == "/_standin/faults" and method == "POST":
            faults = self.body_json()
            with LOCK:
                STATE["faults"] = faults if isinstance(faults, list) else []
            return self.send_json(200, {"ok": True})
        if path == "/_standin/stats":
            with LOCK:
                snapshot = {k: (dict(v) if isinstance(v, dict) else v) for k, v in STATE.items()
                            if k not in ("faults", "leonardo")}
            return self.send_json(200, snapshot)
        if path == "/_standin/reset" and method == "POST":
            with LOCK:
                STATE.update({"connections": 0, "requests": 0, "by_path": {}, "faults": [], "auth": None,
                              "gzip_responses": 0, "last_fault_body": None})
            return self.send_json(200, {"ok": True})
        return self.send_json(404, {"error": "unknown control path"})

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")


def usage(prompt, completion):
    p, c = max(1, len(prompt.split())), max(1, len(completion.split()))
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def vector(text):
    rng = random.Random(text)
    return [round(rng.uniform(-1, 1), 6) for _ in range(8)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--api-key", help="require this key (Bearer, or Runware's authentication task)")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--leonardo-polls", type=int, default=2, help="polls before a Leonardo generation completes")
    args = parser.parse_args()

    # A real provider's listen queue is deep; the default of 5 drops connections of a busy cluster.
    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    server.api_key = args.api_key
    server.leonardo_polls = args.leonardo_polls
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(str(port))
        import os
        os.replace(args.port_file + ".tmp", args.port_file)
    print("standin listening on %s:%d" % (args.host, port), flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

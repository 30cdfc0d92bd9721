# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The agent the immutable.infra.builder connection runs inside a builder container, one per builder.

PRIVATE to the collection. Not imported on the controller: its source is handed to the container's python3
(``python3 -B -c <source>``) by the controller-side channel (_builder_channel.py). Standard library only, Python 3.6+.

It reads requests from stdin and answers on stdout, one at a time. A frame is a 4-byte big-endian length, a JSON
header of that length, then exactly ``header["len"]`` bytes of payload:

- ``{"op": "exec", "cmd": "...", "len": n}`` + stdin: runs ``/bin/sh -c cmd``; answers
  ``{"rc": rc, "out": len(stdout), "len": len(stdout) + len(stderr)}`` + stdout + stderr.
- ``{"op": "put", "path": "...", "len": n}`` + content: writes the file (the agent's umask applies, as for
  ``docker exec ... dd of=path``); answers ``{"len": 0}``.
- ``{"op": "fetch", "path": "...", "len": 0}``: answers ``{"len": n}`` + content.
- ``{"op": "ping", "len": 0}``: answers ``{"len": 0, "pid": pid}``.

A failed put or fetch answers ``{"error": "...", "len": 0}``. The agent exits at end of input.
"""

import json
import os
import struct
import subprocess
import sys


def read_exact(stream, size):
    chunks = []
    while size:
        chunk = stream.read(min(size, 1 << 20))
        if not chunk:
            raise EOFError("input closed")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame(stream):
    head = stream.read(4)
    if not head:
        return None, b""
    if len(head) < 4:
        head += read_exact(stream, 4 - len(head))
    header = json.loads(read_exact(stream, struct.unpack(">I", head)[0]).decode("utf-8"))
    return header, read_exact(stream, int(header.get("len", 0)))


def write_frame(stream, header, *payload):
    header = dict(header, len=sum(len(part) for part in payload))
    encoded = json.dumps(header).encode("utf-8")
    stream.write(struct.pack(">I", len(encoded)) + encoded)
    for part in payload:
        stream.write(part)
    stream.flush()


def handle(header, payload):
    op = header.get("op")
    if op == "exec":
        proc = subprocess.run(
            ["/bin/sh", "-c", header["cmd"]],
            input=payload,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            check=False,
        )
        return {"rc": proc.returncode, "out": len(proc.stdout)}, (proc.stdout, proc.stderr)
    if op == "put":
        try:
            with open(header["path"], "wb") as target:
                target.write(payload)
        except OSError as exc:
            return {"error": "cannot write %s in the builder: %s" % (header["path"], exc)}, ()
        return {}, ()
    if op == "fetch":
        try:
            with open(header["path"], "rb") as source:
                return {}, (source.read(),)
        except OSError as exc:
            return {"error": "cannot read %s in the builder: %s" % (header["path"], exc)}, ()
    if op == "ping":
        return {"pid": os.getpid()}, ()
    return {"error": "unknown request %r" % op}, ()


def main():
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        header, payload = read_frame(stdin)
        if header is None:
            return
        answer, parts = handle(header, payload)
        write_frame(stdout, answer, *parts)


if __name__ == "__main__":
    main()

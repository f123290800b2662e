"""Run by /usr/bin/python3.11 under a python:audit collector: waits for "go", then connects to a
local listener and opens a file named on the command line, and reports what it did."""

import json
import socket
import sys

path = sys.argv[1]
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
port = server.getsockname()[1]
print("ready", flush=True)
sys.stdin.readline()
client = socket.socket()
client.connect(("127.0.0.1", port))
client.close()
with open(path, "w") as handle:
    handle.write("audited\n")
server.close()
print(json.dumps({"port": port, "path": path}), flush=True)
sys.stdin.readline()

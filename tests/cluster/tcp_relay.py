"""ProxyCommand for ssh: relay stdin/stdout to HOST:PORT (a test sshd on a port other than 22).

Ray's cluster launcher has no SSH port option; ``auth.ssh_proxy_command`` is how it reaches one.
"""

import os
import selectors
import socket
import sys


def main(host: str, port: int) -> None:
    s = socket.create_connection((host, port))
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "in")
    sel.register(s, selectors.EVENT_READ, "sock")
    while True:
        for key, _ in sel.select():
            if key.data == "in":
                data = os.read(sys.stdin.fileno(), 65536)
                if not data:
                    s.shutdown(socket.SHUT_WR)
                    sel.unregister(sys.stdin.fileno())
                    continue
                s.sendall(data)
            else:
                data = s.recv(65536)
                if not data:
                    return
                os.write(sys.stdout.fileno(), data)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))

"""RESP2 for the apply path: commands encoded as text in bulk, replies checked in bulk.

redis-py packs and parses one command at a time (several microseconds each); a batch of a
million rows is millions of commands. Here a command is one f-string, a chunk of commands is
one ``sendall``, and the ``+QUEUED`` replies Redis gives to commands inside ``MULTI`` are
checked by counting bytes (every one is the same 9 bytes); only when something else arrives
(an error) are the replies parsed, with hiredis, to find which command it answers.

Strings are built as ``str`` and encoded (UTF-8) once per chunk; a bulk string's length is
its byte length (``len`` for ASCII text, the common case, without encoding it twice).
"""

from __future__ import annotations

import socket
from typing import Any

import hiredis

QUEUED = b"+QUEUED\r\n"
EXEC = "*1\r\n$4\r\nEXEC\r\n"
MULTI = "*1\r\n$5\r\nMULTI\r\n"


def byte_len(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode())


def bulk(s: str) -> str:
    """``s`` as a RESP bulk string."""
    return f"${len(s) if s.isascii() else len(s.encode())}\r\n{s}\r\n"


def command(*args: str | int) -> str:
    """One command (array of bulk strings)."""
    return f"*{len(args)}\r\n" + "".join(bulk(a if isinstance(a, str) else str(a)) for a in args)


def multi_key(name: str, keys: list[str], first: str = "") -> str:
    """``NAME [first] k1 k2 ...`` where ``keys`` are already bulk strings (see :func:`bulk`)."""
    head = f"*{len(keys) + 1 + (1 if first else 0)}\r\n{bulk(name)}"
    return head + (bulk(first) if first else "") + "".join(keys)


class Pipe:
    """The socket of one connection holding an open ``MULTI``.

    ``sent`` counts the commands written after ``MULTI``; ``read`` the replies consumed."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.sent = 0
        self.read = 0

    def send(self, text: str, commands: int) -> None:
        self.sock.sendall(text.encode())
        self.sent += commands

    def _recv(self) -> bytes:
        data = self.sock.recv(1 << 18)
        if not data:
            raise ConnectionError("Redis closed the connection")
        return data

    def check_queued(self, keep: int = 0) -> tuple[int, str] | None:
        """Consume ``+QUEUED`` replies until at most ``keep`` commands are unanswered.

        Returns (index of the command, error text) for the first reply that is not
        ``+QUEUED`` (Redis refused that command: ``EXEC`` will abort), else None."""
        while self.sent - self.read > keep:
            k = min(len(self.buf) // 9, self.sent - self.read)
            if k:
                if self.buf.count(QUEUED, 0, k * 9) != k:
                    return self._first_error()
                del self.buf[: k * 9]
                self.read += k
                continue
            self.buf += self._recv()
        return None

    def _first_error(self) -> tuple[int, str]:
        reader: Any = hiredis.Reader()
        reader.feed(bytes(self.buf))
        self.buf.clear()
        i = self.read
        while True:
            r = reader.gets()
            if r is False:
                reader.feed(self._recv())
                continue
            if isinstance(r, Exception):
                return i, str(r)
            i += 1

    def exec(self) -> Any:
        """Send ``EXEC`` and return its reply (a list, possibly holding ReplyErrors; or a
        ReplyError such as EXECABORT). The queued replies must have been consumed."""
        self.sock.sendall(EXEC.encode())
        reader: Any = hiredis.Reader()
        if self.buf:
            reader.feed(bytes(self.buf))
            self.buf.clear()
        while True:
            r = reader.gets()
            if r is not False:
                return r
            reader.feed(self._recv())


__all__ = ["EXEC", "MULTI", "QUEUED", "Pipe", "bulk", "byte_len", "command", "multi_key"]

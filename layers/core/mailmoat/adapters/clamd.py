"""The Antivirus port on clamd: INSTREAM over a unix socket or host:port, bounded, one retry."""

from __future__ import annotations

import os
import socket
import struct

from mailmoat.ports import AntivirusResult

CHUNK = 256 * 1024
DEFAULT_MAX_STREAM = 100 * 1024 * 1024  # clamd's StreamMaxLength default in 1.x


class AntivirusUnavailable(Exception):
    """No engine answered, or it answered with an error: the file is not checked."""


class ClamdAntivirus:
    """clamd's INSTREAM protocol: `zINSTREAM\\0`, then <4-byte length><data> chunks, then a zero length."""

    def __init__(self, address: str, *, timeout: float = 30.0, connect_timeout: float = 3.0,
                 max_stream: int = DEFAULT_MAX_STREAM) -> None:
        self.address = address
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_stream = max_stream

    @classmethod
    def from_address(cls, address: str | None) -> ClamdAntivirus | None:
        """None when nothing is configured (`Settings.clamd_socket` / MAILMOAT_CLAMD_SOCKET)."""
        address = address or os.environ.get("MAILMOAT_CLAMD_SOCKET")
        return cls(address) if address else None

    # --- the port -----------------------------------------------------------------------------
    def scan(self, data: bytes) -> AntivirusResult:
        if len(data) > self.max_stream:
            # clamd would cut the stream and answer "size limit exceeded": say so up front.
            raise AntivirusUnavailable(f"{len(data)} bytes is over the stream limit {self.max_stream}")
        reply = self._with_retry(lambda sock: self._instream(sock, data))
        return self._parse(reply)

    def ping(self) -> bool:
        try:
            return self._with_retry(lambda sock: self._command(sock, b"zPING\0")) == "PONG"
        except AntivirusUnavailable:
            return False

    def version(self) -> str:
        return self._with_retry(lambda sock: self._command(sock, b"zVERSION\0"))

    # --- transport ----------------------------------------------------------------------------
    def _connect(self) -> socket.socket:
        address = self.address
        for prefix in ("unix://", "unix:", "tcp://"):
            if address.startswith(prefix):
                address = address[len(prefix):]
                break
        if "/" in address or ":" not in address:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: str | tuple[str, int] = address
        else:
            host, _, port = address.rpartition(":")
            family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            target = (host.strip("[]"), int(port))
        sock.settimeout(self.connect_timeout)
        try:
            sock.connect(target)
        except OSError:
            sock.close()
            raise
        sock.settimeout(self.timeout)
        return sock

    def _with_retry(self, action: object) -> str:
        """One reconnect: clamd closes idle connections and restarts on signature reloads."""
        last: Exception | None = None
        for _attempt in range(2):
            try:
                sock = self._connect()
            except OSError as exc:
                last = exc
                continue
            try:
                return action(sock)  # type: ignore[operator, no-any-return]
            except (OSError, ConnectionError) as exc:
                last = exc
            finally:
                sock.close()
        raise AntivirusUnavailable(f"clamd at {self.address}: {last}")

    def _instream(self, sock: socket.socket, data: bytes) -> str:
        sock.sendall(b"zINSTREAM\0")
        view = memoryview(data)
        try:
            for start in range(0, len(view), CHUNK):
                chunk = view[start:start + CHUNK]
                sock.sendall(struct.pack("!L", len(chunk)) + chunk)
            sock.sendall(struct.pack("!L", 0))
        except OSError:
            # clamd answers "INSTREAM size limit exceeded. ERROR" and closes mid-stream;
            # that answer is the reason, not the broken pipe (and retrying cannot help).
            try:
                reply = self._read_reply(sock)
            except OSError:
                raise
            raise AntivirusUnavailable(f"clamd: {reply[:200]}") from None
        return self._read_reply(sock)

    def _command(self, sock: socket.socket, command: bytes) -> str:
        sock.sendall(command)
        return self._read_reply(sock)

    @staticmethod
    def _read_reply(sock: socket.socket) -> str:
        buf = bytearray()
        while not buf.endswith(b"\0"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            buf += chunk
            if len(buf) > 64 * 1024:
                raise ConnectionError("clamd reply too long")
        if not buf:
            raise ConnectionError("clamd closed the connection without a reply")
        return bytes(buf).rstrip(b"\0").decode("utf-8", "replace").strip()

    @staticmethod
    def _parse(reply: str) -> AntivirusResult:
        # "stream: OK" | "stream: Eicar-Signature FOUND" | "INSTREAM size limit exceeded. ERROR"
        body = reply.split(":", 1)[1].strip() if reply.startswith("stream:") else reply
        if body == "OK":
            return AntivirusResult(infected=False)
        if body.endswith("FOUND"):
            return AntivirusResult(infected=True, signature=body[: -len("FOUND")].strip())
        raise AntivirusUnavailable(f"clamd: {reply[:200]}")

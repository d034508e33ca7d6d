"""Test certificates (a CA, a server and a client certificate, by openssl) and a TLS
terminator (stunnel) in front of a plaintext server."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from stream_app.embedded import free_port, wait_for_port

OPENSSL = shutil.which("openssl")
STUNNEL = shutil.which("stunnel4") or shutil.which("stunnel")


def make_certs(directory: Path) -> dict[str, Path]:
    """ca.crt, server.{crt,key} and client.{crt,key} for localhost / 127.0.0.1."""
    def run(*args: str) -> None:
        subprocess.run([OPENSSL, *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=stream-app test CA")
    for who in ("server", "client"):
        (directory / f"{who}.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{who}.key", "-out",
            f"{who}.csr", "-subj", "/CN=localhost")
        run("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{who}.crt", "-days", "2", "-extfile", f"{who}.ext")
    return {name: directory / name for name in ("ca.crt", "server.crt", "server.key",
                                                "client.crt", "client.key")}


class Stunnel:
    """TLS on ``port`` in front of 127.0.0.1:``target``; client certificates required
    when ``mutual``."""

    def __init__(self, certs: dict[str, Path], target: int, workdir: Path,
                 mutual: bool = True) -> None:
        self.port = free_port()
        self.conf = workdir / f"stunnel-{self.port}.conf"
        self.conf.write_text("\n".join([
            "foreground = yes", f"pid = {workdir / f'stunnel-{self.port}.pid'}", "debug = 4",
            "[tls]", f"accept = 127.0.0.1:{self.port}", f"connect = 127.0.0.1:{target}",
            f"cert = {certs['server.crt']}", f"key = {certs['server.key']}",
            f"CAfile = {certs['ca.crt']}", f"verify = {2 if mutual else 0}", ""]))
        self.log = workdir / f"stunnel-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "Stunnel":
        self.proc = subprocess.Popen([STUNNEL, str(self.conf)], stdout=open(self.log, "wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port("127.0.0.1", self.port, 10)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

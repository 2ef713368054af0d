"""A throw-away PKI for the TLS tests, made with the openssl command line (RSA 2048, as the
BCP 195 suites TLS_*_RSA_WITH_AES_*_GCM_* need RSA certificates).

Files (PEM) in one folder; every key is unencrypted (DCMTK's `+tls` takes it with `-pw` unused):
- ca.pem / ca.key: the trusted test CA; other-ca.pem: a CA nobody trusts.
- server.pem/.key: CN=localhost, SAN DNS:localhost, IP:127.0.0.1 (the agent's and the peers' listener).
- client.pem/.key: CN=modality1, O=Test Hospital (a trusted client).
- rogue.pem/.key: a client certificate issued by other-ca (wrong CA).
- expired.pem/.key: a client certificate of the trusted CA that expired in 2020.
- otherhost.pem/.key: a server certificate of the trusted CA for "otherhost.example" only.
- server2.pem/.key: a second certificate for localhost (CN=localhost-renewed) for the reload test.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CLIENT_SUBJECT = "CN=modality1,O=Test Hospital"


@dataclass(frozen=True)
class TestPki:
    folder: Path

    def __getattr__(self, name: str) -> Path:  # pki.server_pem, pki.server_key, pki.ca_pem ...
        stem, _, ext = name.rpartition("_")
        if ext not in ("pem", "key") or not stem:
            raise AttributeError(name)
        return self.folder / f"{stem.replace('_', '-')}.{ext}"


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(folder: Path, name: str, cn: str) -> None:
    _run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
         "-days", "3650", "-subj", f"/O=Test PKI/CN={cn}",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         cwd=folder)


def _leaf(folder: Path, name: str, subject: str, ca: str, *, san: str | None, client: bool,
          dates: tuple[str, str] | None = None) -> None:
    _run("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
         "-subj", subject, cwd=folder)
    ext = folder / f"{name}.ext"
    lines = ["basicConstraints=CA:FALSE", "keyUsage=digitalSignature,keyEncipherment",
             f"extendedKeyUsage={'clientAuth' if client else 'serverAuth,clientAuth'}"]
    if san:
        lines.append(f"subjectAltName={san}")
    ext.write_text("\n".join(lines) + "\n")
    if dates is None:
        _run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "3650", "-extfile", ext.name, "-out", f"{name}.pem", cwd=folder)
        return
    # An expired certificate needs a start and end in the past: `openssl ca` takes explicit dates.
    (folder / "index.txt").write_text("")
    (folder / "serial").write_text("1000\n")
    conf = folder / "ca.cnf"
    conf.write_text(
        "[ca]\ndefault_ca=test\n[test]\ndatabase=index.txt\nserial=serial\nnew_certs_dir=.\n"
        "default_md=sha256\npolicy=any\ncopy_extensions=none\nunique_subject=no\n"
        "[any]\ncommonName=supplied\norganizationName=optional\n"
    )
    _run("ca", "-batch", "-config", conf.name, "-cert", f"{ca}.pem", "-keyfile", f"{ca}.key", "-in", f"{name}.csr",
         "-startdate", dates[0], "-enddate", dates[1], "-extfile", ext.name, "-out", f"{name}.pem", "-notext",
         cwd=folder)


def make_pki(folder: Path) -> TestPki:
    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl command line is needed to make test certificates (apt-get install openssl)")
    folder.mkdir(parents=True, exist_ok=True)
    _ca(folder, "ca", "Test CA")
    _ca(folder, "other-ca", "Untrusted CA")
    _leaf(folder, "server", "/O=Test Hospital/CN=localhost", "ca", san="DNS:localhost,IP:127.0.0.1", client=False)
    _leaf(folder, "server2", "/O=Test Hospital/CN=localhost-renewed", "ca", san="DNS:localhost,IP:127.0.0.1",
          client=False)
    _leaf(folder, "client", "/O=Test Hospital/CN=modality1", "ca", san=None, client=True)
    _leaf(folder, "rogue", "/O=Test Hospital/CN=modality1", "other-ca", san=None, client=True)
    _leaf(folder, "expired", "/O=Test Hospital/CN=modality1", "ca", san=None, client=True,
          dates=("20200101000000Z", "20200201000000Z"))
    _leaf(folder, "otherhost", "/O=Test Hospital/CN=otherhost.example", "ca", san="DNS:otherhost.example",
          client=False)
    return TestPki(folder)

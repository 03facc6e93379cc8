"""How the owner reaches a cluster: what the broker reports and ``/connection`` returns."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ConnectionInfo(BaseModel):
    """The scheduler's address and the owner's TLS material (PEM *contents*, not paths).

    ``distributed.Security`` accepts PEM contents in place of file names, so
    :meth:`security` needs no files on disk.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str
    tls_ca: str | None = None
    tls_client_cert: str | None = None
    tls_client_key: str | None = None
    dashboard_link: str | None = None
    attach_url: str | None = None
    expires: int | None = None  # epoch seconds: the cluster's TTL

    @property
    def uses_tls(self) -> bool:
        """Whether the scheduler expects TLS client certificates."""
        return self.tls_ca is not None and self.tls_client_cert is not None

    def security(self) -> Any:
        """A ``distributed.Security`` for this cluster (``None`` without TLS material)."""
        if not self.uses_tls:
            return None
        from distributed.security import Security  # a 0.5 s import: only when asked

        return Security(  # type: ignore[no-untyped-call]
            tls_ca_file=self.tls_ca,
            tls_client_cert=self.tls_client_cert,
            tls_client_key=self.tls_client_key,
            require_encryption=True,
        )

    def snippet(self) -> str:
        """Python code that connects a ``distributed.Client`` to the cluster (``info -c``)."""
        if not self.uses_tls:
            return f'from distributed import Client\n\nclient = Client("{self.address}")\n'
        lines = [
            "from distributed import Client",
            "from distributed.security import Security",
            "",
            "security = Security(",
            f"    tls_ca_file={_pem(self.tls_ca)},",
            f"    tls_client_cert={_pem(self.tls_client_cert)},",
        ]
        if self.tls_client_key is not None:
            lines.append(f"    tls_client_key={_pem(self.tls_client_key)},")
        lines += [
            "    require_encryption=True,",
            ")",
            f'client = Client("{self.address}", security=security)',
        ]
        return "\n".join(lines) + "\n"


def _pem(text: str | None) -> str:
    body = (text or "").strip("\n")
    return '"""\\\n' + body + '\n"""'

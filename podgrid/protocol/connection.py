"""How the owner reaches a cluster: what the broker reports and ``/connection`` returns.

No private key is ever part of it on the wire: ``GET /v1/requests/{id}/connection`` gives the
scheduler address and the cluster CA; ``POST`` with the owner's CSR (:class:`ConnectionRequest`)
adds the owner's signed client certificate. The owner's key is made by the user's own process
(:meth:`podgrid.PodGrid.connection`) and put into :attr:`ConnectionInfo.tls_client_key` there,
a field that is never serialized, so it cannot reach a reply, a report, a log or a database row.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from podgrid.protocol.csr import MAX_CSR_CHARS


class ConnectionInfo(BaseModel):
    """The scheduler's address, the cluster CA and the owner's certificate (PEM *contents*).

    ``distributed.Security`` accepts PEM contents in place of file names, so :meth:`security`
    needs no files on disk. ``tls_client_key`` is filled in locally and excluded from every
    dump (``model_dump``/``model_dump_json``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str
    tls_ca: str | None = None
    tls_client_cert: str | None = None
    tls_client_key: str | None = Field(default=None, exclude=True, repr=False)
    dashboard_link: str | None = None
    attach_url: str | None = None
    expires: int | None = None  # epoch seconds: the cluster's TTL
    # Added by the master queue for the owner: the CA of brokers' HTTPS certificates and the
    # name this broker's certificate carries, to reach the owner routes (scale, dashboard).
    broker_ca: str | None = None
    broker_name: str | None = None

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

    def snippet(self, key_file: str | None = None) -> str:
        """Python code that connects a ``distributed.Client`` to the cluster (``info -c``).

        The CA and the certificate are public and embedded; the private key is referenced by
        ``key_file`` (a 0600 file of the user's) so printed or pasted code never carries it.
        Without ``key_file`` the key is left out (the caller adds ``tls_client_key``).
        """
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
        if key_file is not None:
            lines.append(f"    tls_client_key={key_file!r},")
        lines += [
            "    require_encryption=True,",
            ")",
            f'client = Client("{self.address}", security=security)',
        ]
        return "\n".join(lines) + "\n"


class ConnectionRequest(BaseModel):
    """``POST /v1/requests/{id}/connection``: the owner's PEM CSR (the key stays with the owner)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    csr: Annotated[StrictStr, Field(min_length=1, max_length=MAX_CSR_CHARS)]


def _pem(text: str | None) -> str:
    body = (text or "").strip("\n")
    return '"""\\\n' + body + '\n"""'

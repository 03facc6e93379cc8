"""Typed settings for every PoD Grid component.

The LDAP-style configuration hierarchy (read with ldap3 from a real directory, or from an
LDIF file as the embedded default), the server-request config parser (TOML and AliEn JDL),
and the small shared plumbing: structlog set-up and the instrumented tenacity retry policy.
"""

from config.logs import LogFormat, setup_logging
from config.retry import retry_policy, set_testing

__all__ = ["LogFormat", "retry_policy", "set_testing", "setup_logging"]

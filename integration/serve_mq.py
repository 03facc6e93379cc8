"""``python -m integration.serve_mq SETTINGS.json``: the master queue as its own process.

The same service code and signal handling as ``podgrid masterqueue serve`` (its ``serve``
coroutine), with every :class:`MasterQueueSettings` field settable: the integration suite needs
a short lease and a fast sweep, which are not command-line flags, so that a SIGKILLed agent's
job comes back in seconds instead of a minute.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from podgrid._cmd_masterqueue import serve
from podgrid.config import setup_logging
from podgrid.masterqueue.settings import MasterQueueSettings


def main(argv: list[str]) -> int:
    """Run the master queue with the settings in ``argv[0]`` until SIGTERM/SIGINT."""
    setup_logging("json", "INFO")
    settings = MasterQueueSettings(**json.loads(Path(argv[0]).read_text()))
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

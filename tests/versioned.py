"""Run a corral daemon as if it were built for another protocol version (rolling upgrade tests).

``python tests/versioned.py VERSION MODULE [ARGS...]`` sets ``corral.protocol.PROTOCOL_VERSION`` to
VERSION (and ``MIN_PROTOCOL`` to VERSION - 1) before anything else imports them, then runs MODULE
(``corral.controller`` or ``corral.agent``) as ``__main__`` with ARGS: a real daemon of the same code,
speaking and accepting what a release of that protocol would.
"""

from __future__ import annotations

import runpy
import sys

import corral.protocol as protocol


def main() -> None:
    version, module = int(sys.argv[1]), sys.argv[2]
    setattr(protocol, "PROTOCOL_VERSION", version)  # noqa: B010 - Final in the module: rebound on purpose
    setattr(protocol, "MIN_PROTOCOL", version - 1)  # noqa: B010
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

"""``corral certs``: make a CA, the controller's certificate and per-identity certificates (offline).

::

    corral certs init ./pki --host ctl.example.com --host 10.0.0.5
    corral certs issue ./pki --agent gpu-1 --label zone=a --types shell,python
    corral certs issue ./pki --client alice --role submitter --namespace team-a

These commands only write files; they never talk to a controller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from corral.controller.cli.common import EXIT_INVALID, die
from corral.controller.rpc.identity import ROLES

__all__ = ["CA_DAYS", "CLIENT_ROLES", "LEAF_DAYS", "app", "init", "issue"]

# The same values as in corral.controller.certs (a test checks): that module loads the X.509 code,
# which every other command would pay for at start if it were imported here.
CA_DAYS = 3650
LEAF_DAYS = 365
CLIENT_ROLES = tuple(r for r in ROLES if r != "agent")

app = typer.Typer(
    name="certs",
    help="Make TLS certificates: a CA, the controller's certificate, agent and client certificates.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)

DirArgument = Annotated[
    Path, typer.Argument(help="Folder of the CA and the certificates.", show_default=False, file_okay=False)
]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace files that exist.")]
DaysOption = Annotated[int, typer.Option("--days", min=1, max=CA_DAYS, help="Validity of the new certificate in days.")]


@app.command("init")
def init(
    directory: DirArgument,
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="DNS name or IP address clients use to reach the controller (repeatable); "
            "localhost, 127.0.0.1 and ::1 are always included.",
        ),
    ] = None,
    days: DaysOption = LEAF_DAYS,
    force: ForceOption = False,
) -> None:
    """Write a CA (ca.pem, ca-key.pem) and the controller's certificate (controller.pem, controller-key.pem).

    Keys are written with mode 0600. Keep ca-key.pem offline once every certificate is issued.
    """
    from corral.controller.certs import CertError, init_dir

    try:
        ca, controller = init_dir(directory, host or [], force=force, days=days)
    except CertError as exc:
        die(f"error: {exc}", EXIT_INVALID)
    for path in (ca.cert, ca.key, controller.cert, controller.key):
        print(path)


@app.command("issue")
def issue(
    directory: DirArgument,
    agent: Annotated[str | None, typer.Option("--agent", help="Issue an agent certificate with this name.")] = None,
    client: Annotated[str | None, typer.Option("--client", help="Issue a client certificate with this name.")] = None,
    role: Annotated[
        str | None, typer.Option("--role", help=f"Client role: {', '.join(CLIENT_ROLES)} (default viewer).")
    ] = None,
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", help="Namespace the identity may act in (repeatable; none: every namespace)."),
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", help="Agent label KEY=VALUE granted by the certificate (repeatable).")
    ] = None,
    types: Annotated[
        str | None,
        typer.Option("--types", help="Agent types the agent may offer, comma separated (e.g. shell,python)."),
    ] = None,
    days: DaysOption = LEAF_DAYS,
    force: ForceOption = False,
) -> None:
    """Write NAME.pem and NAME-key.pem (0600) signed by the CA in DIR, for an agent or a client.

    The certificate carries the identity's grant: agents get the role "agent" with the given labels,
    types and namespaces (the controller trusts these, not what the agent claims); clients get --role.
    """
    from corral.controller.certs import CertError, agent_grant, client_grant, issue_identity

    if (agent is None) == (client is None):
        die("error: give exactly one of --agent NAME or --client NAME", EXIT_INVALID)
    try:
        if agent is not None:
            if role is not None:
                die("error: --role is for --client certificates (agents always have the role agent)", EXIT_INVALID)
            labels: dict[str, str] = {}
            for text in label or []:
                key, sep, value = text.partition("=")
                if not sep:
                    die(f"error: --label expects KEY=VALUE, got {text!r}", EXIT_INVALID)
                labels[key] = value
            agent_types = [t for t in (types or "").split(",") if t]
            grant = agent_grant(labels, agent_types, namespace or [])
            name = agent
        else:
            if label or types:
                die("error: --label and --types are for --agent certificates", EXIT_INVALID)
            grant = client_grant(role or "viewer", namespace or [])
            name = str(client)
        issued = issue_identity(directory, name, grant, force=force, days=days)
    except CertError as exc:
        die(f"error: {exc}", EXIT_INVALID)
    print(issued.cert)
    print(issued.key)

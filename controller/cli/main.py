"""The ``corral`` command: one typer app; each command lives in the module of its group."""

from __future__ import annotations

import typer

from corral.controller.cli import (
    admin,
    analyze,
    approvals,
    backup,
    cache,
    certs,
    cluster,
    contexts,
    daemons,
    fleet,
    gc,
    history,
    quota,
    run,
    runs,
    simulate,
    tasks,
    workflows,
)
from corral.controller.cli.common import (
    CaOption,
    CertOption,
    ClientCredentials,
    KeyOption,
    TokenOption,
    use_credentials,
)
from corral.controller.cli.contexts import ContextOption
from corral.controller.cli.schedules import app as schedule_app
from corral.controller.cli.version import VersionOption

__all__ = ["app", "main"]

EPILOG = (
    "Exit codes: 0 ok; 1 workflow failed or cancelled, or an error (controller unreachable, not found); "
    "2 invalid input (workflow file, flags); 3 workflow unschedulable (corral run).\n\n"
    "The controller address comes from --address, else $CORRAL_ADDRESS, else the current context "
    "(`corral context`), else 127.0.0.1:7070. "
    "TLS and credentials come from the global --ca --cert --key --token (before the command), else "
    "$CORRAL_CA, $CORRAL_CERT, $CORRAL_KEY, $CORRAL_TOKEN, else the current context. "
    "Ids accept any unique prefix. Read commands take -o table|wide|json|yaml. NO_COLOR is honoured."
)

app = typer.Typer(
    name="corral",
    help="Run DAG workflows of tasks across a cluster of machines.",
    epilog=EPILOG,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=True,
)


@app.callback()
def options(
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    token: TokenOption = None,
    version: VersionOption = False,
    context: ContextOption = "",
) -> None:
    """Run DAG workflows of tasks across a cluster of machines."""
    contexts.use_for_invocation(context)
    use_credentials(ClientCredentials(ca=ca, cert=cert, key=key, token=token))


_DAEMON = "Daemons"
_WORK = "Workflows"
_TASKS = "Tasks"
_CLUSTER = "Cluster"
_SECURITY = "Security"

app.command("controller", context_settings=daemons.PASSTHROUGH, add_help_option=False, rich_help_panel=_DAEMON)(
    daemons.controller
)
app.command("agent", context_settings=daemons.PASSTHROUGH, add_help_option=False, rich_help_panel=_DAEMON)(
    daemons.agent
)
app.command("dev", rich_help_panel=_DAEMON)(daemons.dev)

app.command("run", rich_help_panel=_WORK)(run.run)
app.command("submit", rich_help_panel=_WORK)(workflows.submit)
app.command("plan", rich_help_panel=_WORK)(workflows.plan)
app.command("analyze", rich_help_panel=_WORK)(analyze.analyze)
app.command("status", rich_help_panel=_WORK)(workflows.status)
app.command("list", rich_help_panel=_WORK)(workflows.list_)
app.command("cancel", rich_help_panel=_WORK)(workflows.cancel)
app.command("pause", rich_help_panel=_WORK)(workflows.pause)
app.command("resume", rich_help_panel=_WORK)(workflows.resume)
app.command("schema", rich_help_panel=_WORK)(workflows.schema)
app.command("simulate", rich_help_panel=_WORK)(simulate.simulate)
runs.register(app, _WORK)
approvals.register(app, _WORK)
app.add_typer(cache.app, name="cache", rich_help_panel=_WORK)

app.command("explain", rich_help_panel=_TASKS)(tasks.explain)
app.command("logs", rich_help_panel=_TASKS)(tasks.logs)

fleet.register(app, _CLUSTER)  # agents (and agents rm), cordon, uncordon
app.command("drain", rich_help_panel=_CLUSTER)(cluster.drain)

app.add_typer(certs.app, name="certs", rich_help_panel=_SECURITY)
certs.app.command("revoke")(admin.certs_revoke)
app.add_typer(admin.token_app, name="token", rich_help_panel=_SECURITY)
app.add_typer(admin.namespace_app, name="namespace", rich_help_panel=_SECURITY)
app.add_typer(admin.secret_app, name="secret", rich_help_panel=_SECURITY)
app.add_typer(quota.app, name="quota", rich_help_panel=_CLUSTER)
app.add_typer(schedule_app, name="schedule", rich_help_panel=_WORK)
app.command("audit", rich_help_panel=_SECURITY)(admin.audit)
app.command("whoami", rich_help_panel=_SECURITY)(admin.whoami)
history.register(app, _WORK, _TASKS)
app.add_typer(contexts.app, name="context", rich_help_panel=_SECURITY)
app.command("gc", rich_help_panel=_WORK)(gc.gc)  # issue 12
admin.namespace_app.command("retain")(gc.namespace_retain)


def main() -> None:
    """Entry point of the ``corral`` console script."""
    app()


app.command("backup", rich_help_panel=_DAEMON)(backup.backup)
app.command("restore", rich_help_panel=_DAEMON)(backup.restore)

"""The command line: parse options, call one library function, print.

Read commands take ``--json`` and then print JSON alone on stdout; logs go to
stderr (``run`` logs to stdout, which journald reads).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__, config
from . import log as logsetup
from .errors import EdiInboxError
from .jobs import JobResult
from .pipeline import Pipeline


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str, ensure_ascii=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=config.CONFIG_ENV,
    help="TOML configuration file (default: $EDI_INBOX_CONFIG, else "
    "/etc/edi-inbox/edi-inbox.toml if present, else built-in defaults).",
)
@click.version_option(__version__, prog_name="edi-inbox")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None) -> None:
    """edi-inbox: turn X12 850 purchase orders dropped into an inbox into ERP
    orders and 997 acknowledgements.

    \b
    Example:
        edi-inbox --config /etc/edi-inbox/edi-inbox.toml status
    """
    try:
        settings = config.load(config_path)
    except EdiInboxError as exc:
        raise click.ClickException(str(exc)) from None
    logsetup.configure(settings.log.level, settings.log.format, stream=sys.stderr)
    ctx.obj = settings


pass_settings = click.make_pass_decorator(config.Settings)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the job(s) as JSON.")
@pass_settings
def process(settings: config.Settings, files: tuple[Path, ...], as_json: bool) -> None:
    """Run the pipeline once for each FILE, in place (the file is not moved).

    Exits 0 only if every file succeeded (a duplicate counts as success).

    \b
    Example:
        edi-inbox process po_4711.edi --json
    """
    results: list[JobResult] = []
    with Pipeline(settings) as pipeline:
        for path in files:
            results.append(pipeline.run(path))
    if as_json:
        payload = [r.to_json() for r in results]
        _echo_json(payload[0] if len(payload) == 1 else payload)
    else:
        for result in results:
            click.echo(_summary_line(result))
    if not all(r.success for r in results):
        sys.exit(1)


def _summary_line(job: JobResult) -> str:
    mark = {"succeeded": "ok", "duplicate": "dup"}.get(str(job.status), "FAILED")
    line = f"{mark:<6} {job.file_name}"
    if job.orders:
        pos = ", ".join(o.po_number for o in job.orders)
        line += f"  PO {pos}  total {job.total_amount}"
        if job.erp_po_id:
            line += f"  erp {job.erp_po_id}"
    if job.duplicate_of:
        line += f"  duplicate of job {job.duplicate_of}"
    if job.error:
        line += f"\n       {job.error}"
    return line


if __name__ == "__main__":  # python -m edi_inbox.cli
    main()

"""`zephyr-tgi ps` and `zephyr-tgi down`: this library's containers, with their owners, and their removal."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from zephyr_tgi._launcher.ownership import ContainerRecord

__all__ = ["down", "format_age", "owner_column", "ps"]


def format_age(seconds: float | None) -> str:
    """An age as people read it: 42s, 7m, 3h, 2d; "?" when unknown."""
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(int(seconds), 0)}s"


def owner_column(record: ContainerRecord) -> str:
    """What `ps` says about the owner: alive, gone (an orphan, or kept on purpose), elsewhere, unknown."""
    state = str(record.owner_state)
    if state == "gone":
        state = "gone, kept" if record.keep else "gone: orphan"
    elif record.keep:
        state += ", kept"
    return f"{record.owner} ({state})" if record.owner else f"none ({state})"


def _table(records: Sequence[ContainerRecord], now: datetime) -> list[tuple[str, ...]]:
    return [
        (
            record.name,
            record.id[:12],
            record.status,
            owner_column(record),
            record.variant,
            str(record.port) if record.port else "-",
            format_age(record.age(now)),
        )
        for record in records
    ]


def _print_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of text.")
def ps(as_json: bool) -> None:
    """List zephyr-tgi's containers: owner and whether it still runs, state, variant, port, age.

    An orphan is a container whose owner process on this host is gone; `zephyr-tgi down --orphans` removes them
    (the next `serve` or TGIServer start does too). Kept containers (`serve --detach`) outlive their owner on
    purpose.
    """
    from zephyr_tgi._launcher.containers import connect, list_records

    client = connect()
    try:
        records = list_records(client)
    finally:
        client.close()
    now = datetime.now(UTC)
    if as_json:
        click.echo(json.dumps([record.as_json(now) for record in records], ensure_ascii=False))
        return
    if not records:
        click.echo("no zephyr-tgi containers", err=True)
        return
    _print_table(_table(records, now), ("name", "id", "status", "owner", "variant", "port", "age"))


@click.command()
@click.argument("name", required=False)
@click.option("--orphans", is_flag=True, help="Remove the containers whose owner on this host is gone.")
@click.option("--all", "everything", is_flag=True, help="Remove every zephyr-tgi container, live owners' too.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of text.")
def down(name: str | None, orphans: bool, everything: bool, as_json: bool) -> None:
    """Stop and remove zephyr-tgi containers: NAME (or an id prefix), --orphans, or --all.

    Only containers labelled by zephyr-tgi are considered. --all also stops servers other processes are using.
    """
    from zephyr_tgi import ConfigurationError
    from zephyr_tgi._launcher.containers import connect, list_records, remove, select

    if sum((name is not None, orphans, everything)) != 1:
        raise click.UsageError("say which containers: NAME (or an id), --orphans or --all")
    client = connect()
    try:
        try:
            chosen = select(list_records(client), name=name, orphans=orphans, everything=everything)
        except ConfigurationError as exc:
            raise click.UsageError(str(exc)) from None
        removed = remove(client, chosen)
    finally:
        client.close()
    if as_json:
        click.echo(json.dumps({"removed": [record.name for record in removed]}))
        return
    for record in removed:
        click.echo(f"removed {record.name} ({record.id[:12]}, owner {owner_column(record)})")
    if not removed:
        click.echo("nothing to remove", err=True)

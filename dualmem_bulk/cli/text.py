"""What the command line shows people: help without type placeholders (``SOURCE``, not
``{source} <path>``; flags without ``<bool>``), and readable text for nested reports."""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from dualmem_bulk.rundir.reports import StatusReport

__all__ = ["Command", "Group", "readable", "run_lines", "status_lines"]

_METAVARS = {"int": "N", "int range": "N", "float": "NUMBER", "float range": "NUMBER",
             "path": "PATH", "str": "TEXT"}


class _Argument(TyperArgument):
    """An argument shown as ``NAME`` (``[NAME]`` when optional), with no type beside it."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = (self.metavar or self.name or "").upper()
        return name if self.required else f"[{name}]"


class _Option(TyperOption):
    """A flag shows no type; an option with a value shows a plain metavar (``N``, ``PATH``,
    ``lance|parquet``)."""

    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        if self.metavar is not None:
            return self.metavar
        label = self.display_type(ctx).strip("<>")
        return label if "|" in label else _METAVARS.get(label, label.upper())


def _plain(params: list[Any]) -> list[Any]:
    for param in params:
        if isinstance(param, TyperArgument):
            param.__class__ = _Argument
        elif isinstance(param, TyperOption):
            param.__class__ = _Option
    return params


class Command(TyperCommand):
    """A command whose help shows plain names (see the module docstring)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain(super().get_params(ctx))


class Group(TyperGroup):
    """The top-level group, with the same plain help."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain(super().get_params(ctx))


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:g}"
    return str(value)


def readable(info: dict[str, Any], indent: int = 0) -> list[str]:
    """A report as aligned ``key  value`` lines; nested objects indented below their key,
    short lists of plain values joined by commas (long ones one a line), empty ones as
    ``none``."""
    lines: list[str] = []
    width = max((len(str(k)) for k in info), default=0)
    pad = " " * indent
    for key, value in info.items():
        label = f"{pad}{key:<{width}}"
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{key}:")
            lines += readable(value, indent + 2)
        elif isinstance(value, list) and value and (
            any(isinstance(v, (dict, list)) for v in value)
            or sum(len(_scalar(v)) + 2 for v in value) > 80  # long items: one a line
        ):
            lines.append(f"{pad}{key}:")
            for item in value:
                lines += (readable(item, indent + 2) if isinstance(item, dict)
                          else [f"{pad}  {_scalar(item)}"])
        elif isinstance(value, (dict, list)):
            lines.append(f"{label}  " + (", ".join(_scalar(v) for v in value) or "none"))
        else:
            lines.append(f"{label}  {_scalar(value)}")
    return lines


def status_lines(info: StatusReport) -> list[str]:
    """``status`` as text: the same figures as ``status --json``."""
    done, total = info.nodes_done, info.nodes_total
    holder = info.lock_holder
    lines = [f"{info.run_dir}: {info.state} (phase {info.phase or '-'}, {info.mode} run)"]
    if done is None:
        lines.append("  nodes            no checkpoint yet (the export writes none: stopped, it "
                     "starts over)")
    else:
        of = f" of {total:,}" if total is not None else " (total known when the copy ends)"
        lines.append(f"  nodes            {done:,}{of}")
    rate, eta = info.rate_nodes_per_s, info.eta_s
    lines.append(f"  rate             {_scalar(rate)} nodes/s" if rate is not None else
                 "  rate             - (no checkpoint yet)")
    lines.append(f"  ETA              {eta:,.1f} s" if eta is not None else
                 "  ETA              - (no rate yet)")
    lines.append(f"  last checkpoint  {info.last_checkpoint or '- (none yet)'}")
    lines.append(f"  lock             held by pid {holder['pid']} on {holder['host']} since "
                 f"{holder['started']}" if holder else "  lock             free (no migrator "
                                                       "running)")
    if info.mode == "online":
        lines.append(f"  serving          {info.serving}; "
                     f"{_scalar(info.changes_applied)} changes applied")
    possible = "possible" if info.rollback_possible else "not possible"
    lines.append(f"  rollback         {possible}")
    return lines


def run_lines(r: Any, dry_run: bool) -> list[str]:
    """A conversion's (or dry run's) report as text: counts, per-phase rates, quarantine codes,
    and the estimate and decision of a dry run."""
    resumed = (f" ({r.nodes_this_invocation:,} by this invocation)"
               if r.nodes_this_invocation != r.nodes_total else "")
    lines = [
        f"{r.status}: {r.nodes_converted:,} of {r.nodes_total:,} nodes "
        f"{'would be converted' if dry_run else 'converted'}{resumed} in {r.elapsed_s:.1f} s "
        f"({r.nodes_per_s:,.0f} nodes/s); {r.quarantined:,} quarantined",
    ]
    for name, p in r.phases.items():
        rate = "-" if p["nodes_per_s"] is None else f"{p['nodes_per_s']:,.0f}"
        lines.append(f"  {name:<9} {p['nodes']:>12,} nodes {p['seconds']:>9.1f} s "
                     f"{rate:>12} nodes/s")
    lines += [f"  {n:>8,}  {code}" for code, n in r.quarantine_codes.items()]
    if r.quarantine_path:
        lines.append(f"quarantine      {r.quarantine_path}")
    if dry_run and r.estimate is not None:
        e = r.estimate
        lines.append(f"estimated disk {r.estimated_disk_bytes:,} bytes (target "
                     f"{e['target_bytes']:,}, run directory {e['run_dir_bytes']:,}), time "
                     f"{r.estimated_s:,.1f} s with --workers 0 (measured on "
                     f"{e['sample_rows']:,} {e['basis']} in {e['sample_s']:.1f} s)")
        lines += [f"  {fs['path']}: {fs['free_bytes']:,} bytes free, needs "
                  f"{fs['needed_bytes']:,} ({' and '.join(fs['for'])})"
                  for fs in e["filesystems"]]
        lines.append(f"{r.decision}: {r.decision_reason}")
    elif not dry_run:
        lines += [f"snapshot digest {r.snapshot_digest}", f"target digest   {r.target_digest}",
                  f"run directory   {r.run_dir}"]
    return lines

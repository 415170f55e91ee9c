"""What the command line shows people: help without type placeholders (``SOURCE``, not
``{source} <path>``; flags without ``<bool>``), and readable text for nested reports."""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

__all__ = ["Command", "Group", "readable", "status_lines"]

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
    lists of plain values joined by commas, empty ones as ``none``."""
    lines: list[str] = []
    width = max((len(str(k)) for k in info), default=0)
    pad = " " * indent
    for key, value in info.items():
        label = f"{pad}{key:<{width}}"
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{key}:")
            lines += readable(value, indent + 2)
        elif isinstance(value, list) and value and any(isinstance(v, (dict, list))
                                                       for v in value):
            lines.append(f"{pad}{key}:")
            for item in value:
                lines += (readable(item, indent + 2) if isinstance(item, dict)
                          else [f"{pad}  {_scalar(item)}"])
        elif isinstance(value, (dict, list)):
            lines.append(f"{label}  " + (", ".join(_scalar(v) for v in value) or "none"))
        else:
            lines.append(f"{label}  {_scalar(value)}")
    return lines


def status_lines(info: dict[str, Any]) -> list[str]:
    """``status`` as text: the same figures as ``status --json``."""
    done, total = info["nodes_done"], info["nodes_total"]
    holder = info["lock_holder"]
    lines = [f"{info['run_dir']}: {info['state']} (phase {info['phase'] or '-'}, "
             f"{info['mode']} run)"]
    if done is None:
        lines.append("  nodes            no checkpoint yet (the export writes none: stopped, it "
                     "starts over)")
    else:
        of = f" of {total:,}" if total is not None else " (total known when the copy ends)"
        lines.append(f"  nodes            {done:,}{of}")
    rate, eta = info["rate_nodes_per_s"], info["eta_s"]
    lines.append(f"  rate             {_scalar(rate)} nodes/s" if rate is not None else
                 "  rate             - (no checkpoint yet)")
    lines.append(f"  ETA              {eta:,.1f} s" if eta is not None else
                 "  ETA              - (no rate yet)")
    lines.append(f"  last checkpoint  {info['last_checkpoint'] or '- (none yet)'}")
    lines.append(f"  lock             held by pid {holder['pid']} on {holder['host']} since "
                 f"{holder['started']}" if holder else "  lock             free (no migrator "
                                                       "running)")
    if info["mode"] == "online":
        lines.append(f"  serving          {info['serving']}; "
                     f"{_scalar(info['changes_applied'])} changes applied")
    possible = "possible" if info["rollback_possible"] else "not possible"
    lines.append(f"  rollback         {possible}")
    return lines

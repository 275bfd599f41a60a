"""`chaos report` for this project's journals: why a run held or failed, on one offline page.

chaostoolkit-reporting (0.18) renders every journal through its own fixed Jinja template (no
option to pass another) and pandoc, and on our journals that page says little and garbles much:

- the steady-state table prints each tolerance as a Python dict, and pandoc reads the
  ``$.ok ... $`` between two rows' jsonpath tolerances as TeX math, merging rows;
- the verdicts' ``reason`` sentences and figures appear only in a raw JSON appendix;
- the experiments' ``contributions`` turn into pygal charts (organisation impact pies, radar)
  whose script loads from a CDN, and a "### Experiment Contributions Breakdown" heading comes out
  as raw text.

Upstream offers no template hook, so this module is a Chaos Toolkit CLI plugin (entry point
``chaostoolkit.cli_plugins``, loaded by every ``chaos`` invocation) that, when
chaostoolkit-reporting is installed, replaces its ``generate_report`` and
``generate_report_header`` for journals of experiments that declare a chaosmessaging control (any
other journal goes through upstream unchanged). It renders markdown headings and raw HTML blocks
in which every text is HTML-escaped and every ``$`` is ``&#36;`` (pandoc passes raw HTML through,
so nothing can turn into math); upstream's ``save_report`` still runs pandoc, with its own CSS
embedded. The page has no script at all.

Per verdict probe, before and after the method: whether it held, its ``reason`` and its key
figures; then a time line of the steady-state passes, the method's activities, the rollbacks, the
fault windows and the load phases (``chaosmessaging.controls.report`` writes the last two into the
journal); then the activities with their errors.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import Any

import click

__all__ = ["render_journal", "render_header", "is_ours", "command", "install"]

WIDTH, LABEL_W, ROW_H = 960, 260, 20
COLOURS = {
    "succeeded": "#4c9a2a",
    "failed": "#000000",
    "fault": "#e53935",
    "load": "#1e88e5",
    "steady": "#8e24aa",
    "rollback": "#fb8c00",
}
MAX_FIGURES = 8


def is_ours(journal: dict) -> bool:
    """True for a journal of an experiment that declares a chaosmessaging control."""
    experiment = journal.get("experiment") or {}
    return any(
        str((c.get("provider") or {}).get("module", "")).startswith("chaosmessaging.")
        for c in experiment.get("controls") or []
    )


def _esc(value: Any) -> str:
    """HTML-escaped text in which pandoc sees no `$` (TeX math)."""
    return html.escape(str(value), quote=True).replace("$", "&#36;")


def _epoch(value: Any) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if moment.tzinfo is None:  # chaoslib writes naive UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _figure(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        text = json.dumps(value, default=str)
        return text if len(text) <= 80 else text[:77] + "…"
    return str(value)


def _figures(output: Any) -> list[tuple[str, str]]:
    if not isinstance(output, dict):
        return []
    found = []
    for key, value in output.items():
        if key in ("ok", "reason") or value is None:
            continue
        if isinstance(value, str) and len(value) > 80:
            continue
        found.append((key, _figure(value)))
    return found[:MAX_FIGURES]


def _probe_row(probe: dict, phase: str) -> str:
    activity = probe.get("activity") or {}
    output = probe.get("output")
    held = bool(probe.get("tolerance_met")) and probe.get("status") == "succeeded"
    reason = output.get("reason", "") if isinstance(output, dict) else ""
    if probe.get("status") != "succeeded":
        error = probe.get("exception") or ["the probe failed"]
        reason = reason or str(error[-1]).strip()
    elif not reason:
        reason = f"answered {_figure(output)}"
    figures = "<br>".join(f"<code>{_esc(k)}</code> = {_esc(v)}" for k, v in _figures(output))
    mark = '<b class="held">held</b>' if held else '<b class="broke">NOT held</b>'
    return (
        f"<tr><td><code>{_esc(activity.get('name', '?'))}</code></td><td>{phase}</td>"
        f"<td>{mark}</td><td>{_esc(reason)}</td><td>{figures}</td></tr>"
    )


def _verdicts(journal: dict) -> str:
    states = journal.get("steady_states") or {}
    rows = []
    for phase, label in (("before", "before the method"), ("after", "after the method")):
        for probe in (states.get(phase) or {}).get("probes") or []:
            rows.append(_probe_row(probe, label))
    if not rows:
        return "<p>No steady-state probe ran (see the outcome above).</p>"
    return (
        '<table class="verdicts"><thead><tr><th>probe</th><th>when</th><th>verdict</th>'
        "<th>reason</th><th>key figures</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _outcome(journal: dict) -> tuple[str, str]:
    """(one word, one sentence) for the whole run."""
    config_error = journal.get("chaosmessaging_configuration_error")
    if config_error:
        errors = config_error.get("errors") if isinstance(config_error, dict) else None
        return "configuration error", "; ".join(map(str, errors or [config_error]))
    early = journal.get("chaosmessaging_verdict") or {}
    if early.get("failed_before_method"):
        return "failed", f"{early.get('reason', '')} (probes: {', '.join(early.get('probes', []))})"
    after = (journal.get("steady_states") or {}).get("after") or {}
    broken = [
        (p.get("activity") or {}).get("name", "?")
        for p in after.get("probes") or []
        if not p.get("tolerance_met")
    ]
    if journal.get("deviated"):
        return "deviated", "the system breached: " + ", ".join(broken)
    if journal.get("status") == "completed":
        return "held", "the steady state held before and after the method"
    failed = [
        (r.get("activity") or {}).get("name", "?")
        for r in journal.get("run") or []
        if r.get("status") == "failed"
    ]
    why = f"activities failed: {', '.join(failed)}" if failed else "see the activities below"
    return journal.get("status", "failed"), f"the run did not complete ({why})"


def _span(items: list[dict]) -> tuple[float | None, float | None]:
    starts = [_epoch(i.get("start")) for i in items]
    ends = [_epoch(i.get("end")) for i in items]
    starts = [s for s in starts if s is not None]
    ends = [e for e in ends if e is not None]
    return (min(starts) if starts else None, max(ends) if ends else None)


def _timeline_rows(journal: dict) -> list[tuple[str, float, float, str, str]]:
    """(label, start, end, colour, tooltip) per bar."""
    rows = []
    states = journal.get("steady_states") or {}
    for phase in ("before", "after"):
        probes = (states.get(phase) or {}).get("probes") or []
        start, end = _span(probes)
        if start is not None and end is not None:
            met = (states.get(phase) or {}).get("steady_state_met")
            rows.append((f"steady state {phase}", start, end, COLOURS["steady"], f"met: {met}"))
    for item in journal.get("run") or []:
        start, end = _epoch(item.get("start")), _epoch(item.get("end"))
        if start is None or end is None:
            continue
        activity = item.get("activity") or {}
        colour = COLOURS["succeeded" if item.get("status") == "succeeded" else "failed"]
        bg = " (background)" if activity.get("background") else ""
        rows.append(
            (
                f"{activity.get('type', '')} {activity.get('name', '?')}",
                start,
                end,
                colour,
                f"{item.get('status')}{bg}",
            )
        )
    for item in journal.get("rollbacks") or []:
        start, end = _epoch(item.get("start")), _epoch(item.get("end"))
        if start is not None and end is not None:
            name = (item.get("activity") or {}).get("name", "?")
            rows.append((f"rollback {name}", start, end, COLOURS["rollback"], item.get("status")))
    extra = journal.get("chaosmessaging_report") or {}
    run_end = _epoch(journal.get("end"))
    for window in extra.get("fault_windows") or []:
        start = _epoch(window.get("injected_at"))
        end = _epoch(window.get("reverted_at")) or run_end
        if start is not None and end is not None:
            rows.append(
                (
                    f"fault {window.get('kind')} {window.get('target')}",
                    start,
                    end,
                    COLOURS["fault"],
                    "reverted" if window.get("reverted_at") else "never seen reverted",
                )
            )
    for load in extra.get("loads") or []:
        start = _epoch(load.get("started_at"))
        end = _epoch(load.get("ended_at"))
        if end is None and start is not None and load.get("duration_s"):
            end = start + float(load["duration_s"])
        if start is not None and end is not None:
            rate = f" {load['rate']}/s" if load.get("rate") else ""
            rows.append(
                (
                    f"load {load.get('label')}{rate}",
                    start,
                    end,
                    COLOURS["load"],
                    load.get("script") or "",
                )
            )
    return rows


def _timeline(journal: dict) -> str:
    rows = _timeline_rows(journal)
    t0 = _epoch(journal.get("start"))
    t1 = _epoch(journal.get("end"))
    if rows:
        t0 = min([r[1] for r in rows] + ([t0] if t0 is not None else []))
        t1 = max([r[2] for r in rows] + ([t1] if t1 is not None else []))
    if not rows or t0 is None or t1 is None or t1 <= t0:
        return "<p>Nothing timed to show.</p>"
    plot_w = WIDTH - LABEL_W - 10
    scale = plot_w / (t1 - t0)
    height = ROW_H * len(rows) + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" class="timeline" font-family="sans-serif" '
        'font-size="11">'
    ]
    span = t1 - t0
    steps = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800)
    step = next((s for s in steps if span / s <= 12), 3600)
    tick = 0.0
    while tick <= span:
        x = LABEL_W + tick * scale
        parts.append(
            f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height - 18}" stroke="#ddd"/>'
            f'<text x="{x:.1f}" y="{height - 4}" text-anchor="middle" fill="#555">'
            f"{tick:g}s</text>"
        )
        tick += step
    for index, (label, start, end, colour, tip) in enumerate(rows):
        y = index * ROW_H + 2
        x = LABEL_W + (start - t0) * scale
        w = max(2.0, (end - start) * scale)
        parts.append(
            f'<text x="{LABEL_W - 6}" y="{y + 13}" text-anchor="end">{_esc(label[:42])}</text>'
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{ROW_H - 6}" fill="{colour}" '
            f'rx="2"><title>{_esc(label)}: {end - start:.1f}s, {_esc(tip)}</title></rect>'
        )
    parts.append("</svg>")
    legend = " ".join(
        f'<span class="key" style="background:{c}"></span>{_esc(n)}' for n, c in COLOURS.items()
    )
    caption = f"<figcaption>{legend} (seconds from the start)</figcaption>"
    return f"<figure>{''.join(parts)}{caption}</figure>"


def _activities(items: list[dict], t0: float | None) -> str:
    if not items:
        return "<p>None.</p>"
    rows = []
    for item in items:
        activity = item.get("activity") or {}
        start, end = _epoch(item.get("start")), _epoch(item.get("end"))
        at = f"{start - t0:.1f}s" if start is not None and t0 is not None else ""
        took = f"{end - start:.1f}s" if start is not None and end is not None else ""
        error = ""
        if item.get("exception"):
            error = str(item["exception"][-1]).strip()
        rows.append(
            f"<tr><td>{_esc(activity.get('type', ''))}</td>"
            f"<td><code>{_esc(activity.get('name', '?'))}</code></td>"
            f"<td>{_esc(item.get('status', ''))}</td><td>{at}</td><td>{took}</td>"
            f"<td>{_esc(error)}</td></tr>"
        )
    return (
        "<table><thead><tr><th>type</th><th>name</th><th>status</th><th>at</th>"
        "<th>took</th><th>error</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


STYLE = """<style>
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; vertical-align: top; text-align: left; }
b.held { color: #2e7d32; } b.broke { color: #c62828; }
.outcome { font-size: 1.2em; padding: 0.4em 0.6em; border-left: 6px solid #888; }
.outcome.held { border-color: #2e7d32; } .outcome.bad { border-color: #c62828; }
span.key { display: inline-block; width: 12px; height: 10px; margin: 0 3px 0 10px; }
svg.timeline { max-width: 100%; height: auto; }
body { max-width: 1100px; }
</style>"""


def render_journal(journal: dict) -> str:
    """The report section (markdown headings + raw HTML) of one journal."""
    experiment = journal.get("experiment") or {}
    word, sentence = _outcome(journal)
    t0 = _epoch(journal.get("start"))
    good = word == "held"
    started = journal.get("start", "?")
    duration = journal.get("duration")
    took = f"{duration:.1f} s" if isinstance(duration, int | float) else "?"
    summary = (
        f'<p class="outcome {"held" if good else "bad"}"><b>{_esc(word)}</b>: {_esc(sentence)}'
        f"</p><table><tbody>"
        f"<tr><th>status</th><td>{_esc(journal.get('status', '?'))}</td></tr>"
        f"<tr><th>deviated</th><td>{_esc(journal.get('deviated', '?'))}</td></tr>"
        f"<tr><th>started (UTC)</th><td>{_esc(started)}</td></tr>"
        f"<tr><th>duration</th><td>{_esc(took)}</td></tr>"
        "</tbody></table>"
    )
    return "\n\n".join(
        [
            f"# {_md_heading(experiment.get('title', 'experiment'))}",
            f"<p>{_esc(experiment.get('description', ''))}</p>",
            summary,
            "## Verdicts, before and after the method",
            _verdicts(journal),
            "## Time line",
            _timeline(journal),
            "## Method",
            _activities(journal.get("run") or [], t0),
            "## Rollbacks",
            _activities(journal.get("rollbacks") or [], t0),
            "",
        ]
    )


def _md_heading(text: str) -> str:
    """Heading text pandoc reads literally (no math, no emphasis, no raw HTML)."""
    out = str(text).replace("\n", " ")
    for char in "\\`*_{}[]<>#$|~^":
        out = out.replace(char, "\\" + char)
    return out


def render_header(title: str | None) -> str:
    today = datetime.now(UTC).strftime("%d %B %Y")
    name = (title or "Chaos Engineering Report").replace('"', "'")
    return f'---\ntitle: "{name}"\ndate: "{today}"\n---\n\n{STYLE}\n\n'


def install() -> bool:
    """Route our journals through `render_journal` in chaostoolkit-reporting's `chaos report`.
    False when chaostoolkit-reporting is not installed (nothing to patch)."""
    try:
        import chaosreport
        import chaosreport.cli as upstream_cli
    except ImportError:
        return False
    if getattr(upstream_cli, "_chaosmessaging_installed", False):
        return True
    upstream_report = chaosreport.generate_report
    upstream_header = chaosreport.generate_report_header

    def generate_report(journal, export_format="markdown", config=None, secrets=None):
        if is_ours(journal):
            return render_journal(journal)
        return upstream_report(journal, export_format, config, secrets)

    def generate_report_header(journal_paths, export_format="markdown", title=None):
        journals = []
        for path in journal_paths:
            try:
                with open(path) as fp:
                    journals.append(json.load(fp))
            except (OSError, ValueError):
                return upstream_header(journal_paths, export_format, title)
        if journals and all(is_ours(j) for j in journals):
            return render_header(title)
        return upstream_header(journal_paths, export_format, title)

    upstream_cli.generate_report = generate_report
    upstream_cli.generate_report_header = generate_report_header
    upstream_cli._chaosmessaging_installed = True
    return True


@click.command(name="chaosmessaging-report", hidden=True)
def command() -> None:
    """chaosmessaging's hook into `chaos report` (see chaosmessaging.report); does nothing."""
    click.echo("chaosmessaging renders its journals in `chaos report --export-format=html`")


install()

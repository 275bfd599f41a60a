"""The nightly dashboard: one self-contained HTML page per night and an index across nights.

Plotly draws the figures; its JavaScript is embedded once per page (``include_plotlyjs=True``),
so a page opens offline straight from a CI artifact — no CDN. The page's own HTML is a few
tables written here with `html.escape`, no template engine needed for that.

Per night: pass/fail per experiment (blocking or continue-on-error), every criterion with its
measured figures against its thresholds, and per experiment a time series (delivery latency
p50/p95/p99, API error rate, consumer and dispatch lag, PEL size, memory per service) with each
fault's window — injected to reverted, from the fault ledger as the suite watched it — shaded.
The index: the nights, pass/fail per experiment across nights, failure rate by experiment, test
durations, latency baselines, resource usage, coverage against the plan's 92% gate, and the
regression findings (`trends`).
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from chaosmessaging.nightly import history as history_mod
from chaosmessaging.nightly.history import COVERAGE_GATE

__all__ = ["render_night", "render_index", "COVERAGE_GATE"]


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{margin-bottom:.2em} .meta{color:#666}
table{border-collapse:collapse;margin:.5em 0 1.2em} td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left;vertical-align:top;font-size:13px} th{background:#f3f3f3}
.passed,.ok{color:#0a7d2c;font-weight:600} .failed,.error,.interrupted,.bad{color:#c62828;
font-weight:600} .not-run{color:#888} .coe{color:#a66a00}
section.experiment{border-top:2px solid #ddd;margin-top:1.5em;padding-top:.5em}
code{font-size:12px}
"""


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _esc(value) -> str:
    return html.escape(str(value))


def _figs(d: dict) -> str:
    return ", ".join(f"{_esc(k)}={_esc(v)}" for k, v in d.items()) or "—"


class _Page:
    """Collects figures; the first one carries plotly.js."""

    def __init__(self) -> None:
        self.js_done = False

    def fig(self, fig: go.Figure, div_id: str) -> str:
        out = fig.to_html(
            full_html=False,
            include_plotlyjs=not self.js_done,
            div_id=div_id,
            config={"displaylogo": False},
        )
        self.js_done = True
        return out


def _rate_series(t: list[float], num: list, den_extra: list) -> list[float | None]:
    """Per interval: delta(num) / (delta(num) + delta(den_extra)) — e.g. the share of 503s."""
    out: list[float | None] = [None]
    for i in range(1, len(t)):
        b0, b1 = den_extra[i - 1], den_extra[i]
        # a labelled counter appears only once it counted: absent beside a live one means 0
        a0 = num[i - 1] if num[i - 1] is not None or b0 is None else 0.0
        a1 = num[i] if num[i] is not None or b1 is None else 0.0
        if None in (a0, a1, b0, b1) or a1 < a0 or b1 < b0:
            out.append(None)
            continue
        total = (a1 - a0) + (b1 - b0)
        out.append((a1 - a0) / total if total else 0.0)
    return out


def _timeseries(folder: Path, exp: dict) -> go.Figure | None:
    samples_path = folder / "stack-samples.json"
    latency_path = folder / "delivery-latency.json"
    if not samples_path.exists() and not latency_path.exists():
        return None
    fig = make_subplots(
        rows=6,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.04,
        subplot_titles=(
            "end-to-end delivery latency (ms)",
            "API error rate (503 share)",
            "lag (s)",
            "consumer PEL size",
            "memory RSS (MiB)",
            "connections (Redis clients, PostgreSQL backends)",
        ),
    )
    if latency_path.exists():
        lat = json.loads(latency_path.read_text())
        x = [_dt(s) for s in lat["t"]]
        for key, name in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99")):
            fig.add_trace(
                go.Scatter(x=x, y=lat[key], name=f"latency {name}", mode="lines"), row=1, col=1
            )
    if samples_path.exists():
        samples = json.loads(samples_path.read_text())
        x = [_dt(s) for s in samples["t"]]
        services = samples["services"]
        api = services.get("api", {})
        if api:
            errors = _rate_series(
                samples["t"],
                api.get("messaging_api_unavailable_total", []),
                api.get("messaging_messages_accepted_total", []),
            )
            fig.add_trace(
                go.Scatter(x=x, y=errors, name="API 503 share", mode="lines"), row=2, col=1
            )
        for service, metric in (
            ("consumer", "messaging_consumer_lag_seconds"),
            ("dispatcher", "messaging_dispatch_lag_seconds"),
        ):
            values = services.get(service, {}).get(metric)
            if values and any(v is not None for v in values):
                fig.add_trace(go.Scatter(x=x, y=values, name=metric, mode="lines"), row=3, col=1)
        pel = services.get("consumer", {}).get("messaging_consumer_pel_size")
        if pel:
            fig.add_trace(go.Scatter(x=x, y=pel, name="PEL size", mode="lines"), row=4, col=1)
        for name, values in (services.get("connections") or {}).items():
            fig.add_trace(go.Scatter(x=x, y=values, name=name, mode="lines"), row=6, col=1)
        for service, series in services.items():
            if service == "connections":
                continue
            rss = series.get("process_resident_memory_bytes") or []
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=[v / 2**20 if v is not None else None for v in rss],
                    name=f"{service} RSS",
                    mode="lines",
                ),
                row=5,
                col=1,
            )
    end = exp.get("ended_at")
    for window in exp.get("fault_windows", []):
        if window["kind"] == "load":
            continue  # the loads are the background, not a fault
        x0 = _dt(window["injected_at"])
        x1 = _dt(window.get("reverted_at") or end or window["injected_at"])
        fig.add_vrect(
            x0=x0, x1=x1, fillcolor="crimson", opacity=0.15, line_width=0, row="all", col=1
        )
        fig.add_vrect(
            x0=x0,
            x1=x1,
            fillcolor="rgba(0,0,0,0)",
            line_width=0,
            row=1,
            col=1,
            annotation_text=f"{window['kind']} {window['target']}",
            annotation_position="top left",
            annotation_font_size=10,
        )
    fig.update_layout(
        height=1050,
        margin={"l": 60, "r": 20, "t": 40, "b": 30},
        legend={"orientation": "h"},
        title=f"{exp['name']}: time series (fault windows shaded)",
    )
    return fig


_NA_ATTR = " data-applies='false'"
_NA_STYLE = "color:#666"


def _verdict_cell(c: dict) -> str:
    if c.get("applies") is False:  # the platform has no such thing: neither met nor failed
        return f"<td class='na' style='{_NA_STYLE}'>n/a</td>"
    return f"<td class='{'ok' if c['ok'] else 'bad'}'>{'met' if c['ok'] else 'NOT MET'}</td>"


def _criteria_table(exp: dict) -> str:
    rows = "".join(
        f"<tr class='criterion' data-ok='{str(c['ok']).lower()}'"
        f"{_NA_ATTR if c.get('applies') is False else ''}>"
        f"<td>{_esc(c['name'])}</td>{_verdict_cell(c)}"
        f"<td>{_figs(c.get('measured', {}))}</td><td>{_figs(c.get('threshold', {}))}</td>"
        f"<td>{_esc(c.get('reason', ''))}</td></tr>"
        for c in exp.get("criteria", [])
    )
    if not rows:
        return "<p>No criteria recorded (no journal).</p>"
    return (
        f"<table id='criteria-{_esc(exp['name'])}'><tr><th>criterion</th><th>verdict</th>"
        "<th>measured</th><th>threshold</th><th>reason</th></tr>" + rows + "</table>"
    )


def _status(exp: dict) -> str:
    return exp["status"].replace(" ", "-")


def render_night(results_dir: str | Path, history_path: str | Path | None = None) -> Path:
    """Write `<results_dir>/index.html` for one night; returns its path."""
    results_dir = Path(results_dir)
    suite = json.loads((results_dir / "suite.json").read_text())
    page = _Page()
    verdict = (
        "PASSED"
        if suite.get("exit_code") == 0
        else ("INTERRUPTED" if suite.get("interrupted") else "FAILED")
    )
    rows = []
    for exp in suite["experiments"]:
        kind = "blocking" if exp["blocking"] else "<span class='coe'>continue-on-error</span>"
        rows.append(
            f"<tr class='experiment-row' data-name='{_esc(exp['name'])}' "
            f"data-status='{_status(exp)}'><td><a href='#{_esc(exp['name'])}'>"
            f"{_esc(exp['name'])}</a></td><td>{_esc(exp.get('plan_test') or '')}</td>"
            f"<td>{kind}{' · critical' if exp.get('critical') else ''}</td>"
            f"<td class='{_status(exp)}'>{_esc(exp['status'])}</td>"
            f"<td>{_esc(exp.get('duration_s') or '')}</td><td>{_esc(exp.get('reason', ''))}</td>"
            "</tr>"
        )
    parts = [
        f"<h1>Nightly {_esc(suite['night'])} — <span id='verdict' class="
        f"'{verdict.lower()}'>{verdict}</span></h1>",
        f"<p class='meta'>profile {_esc(suite['profile'])} · commit "
        f"{_esc(suite.get('git_sha') or '?')} · started {_dt(suite['started_at']):%H:%M:%S} "
        f"UTC · {len(suite['experiments'])} experiments · blocking failures: "
        f"{_esc(', '.join(suite.get('blocking_failures', [])) or 'none')}</p>",
        "<table id='experiments'><tr><th>experiment</th><th>plan</th><th>kind</th>"
        "<th>status</th><th>duration (s)</th><th>reason</th></tr>" + "".join(rows) + "</table>",
    ]
    gates = suite.get("gates") or []
    if gates:
        parts.append(
            "<table id='gates'><tr><th>suite gate</th><th>verdict</th><th>measured</th>"
            "<th>threshold</th></tr>"
            + "".join(
                f"<tr class='gate' data-ok='{str(g['ok']).lower()}'><td>{_esc(g['name'])}</td>"
                f"<td class='{'ok' if g['ok'] else 'bad'}'>{'met' if g['ok'] else 'NOT MET'}"
                f"</td><td>{_esc(g.get('measured_pct'))}%</td>"
                f"<td>{_esc(g.get('threshold_pct'))}%</td></tr>"
                for g in gates
            )
            + "</table>"
        )
    for exp in suite["experiments"]:
        folder = results_dir / exp["name"]
        parts.append(
            f"<section class='experiment' id='{_esc(exp['name'])}' "
            f"data-status='{_status(exp)}'><h2>{_esc(exp['name'])} "
            f"<span class='{_status(exp)}'>{_esc(exp['status'])}</span></h2>"
        )
        parts.append(_criteria_table(exp))
        windows = [w for w in exp.get("fault_windows", []) if w["kind"] != "load"]
        if windows:
            parts.append(
                "<p>Faults: "
                + "; ".join(
                    f"{_esc(w['kind'])} on {_esc(w['target'])} {_dt(w['injected_at']):%H:%M:%S}"
                    f" → {_dt(w['reverted_at']):%H:%M:%S}"
                    if w.get("reverted_at")
                    else f"{_esc(w['kind'])} on {_esc(w['target'])} (not seen reverted)"
                    for w in windows
                )
                + "</p>"
            )
        if exp.get("leftover_faults"):
            parts.append(
                f"<p class='bad'>Left behind and reverted by the suite: "
                f"{_esc(exp['leftover_faults'])}</p>"
            )
        fig = _timeseries(folder, exp) if folder.is_dir() else None
        if fig is not None:
            parts.append(page.fig(fig, f"series-{exp['name']}"))
        files = (
            [p.relative_to(results_dir) for p in sorted(folder.rglob("*")) if p.is_file()]
            if folder.is_dir()
            else []
        )
        if files:
            parts.append(
                "<details><summary>files</summary><ul>"
                + "".join(f"<li><a href='{_esc(f)}'>{_esc(f)}</a></li>" for f in files)
                + "</ul></details>"
            )
        parts.append("</section>")
    if history_path and Path(history_path).exists():
        parts.append(_trends_section(history_mod.load(history_path), suite["profile"], page))
    out = results_dir / "index.html"
    out.write_text(_html(f"Nightly {suite['night']}", "".join(parts)))
    return out


def _html(title: str, body: str) -> str:
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
        f"<style>{_CSS}</style></head><body>{body}</body></html>"
    )


def _trends_section(history: dict, profile: str, page: _Page) -> str:
    nights, values = history_mod.series(history, profile)
    if not nights:
        return ""
    findings = history_mod.judge(history, profile)
    parts = ["<h2 id='trends'>Trends</h2>"]
    regressed = [f for f in findings if f.regressed]
    parts.append(
        f"<p id='regressions' data-count='{len(regressed)}'>"
        + (
            "Regressions: " + "; ".join(_esc(f.reason) for f in regressed)
            if regressed
            else "No regression (no metric worse by >10% for 3 nights)."
        )
        + "</p>"
    )
    groups = {
        "latency (ms)": [m for m in values if m.endswith(("p50_ms", "p95_ms", "p99_ms"))],
        "throughput (req/s)": [m for m in values if m.endswith("throughput_rps")],
        "test duration (s)": [m for m in values if m.endswith(".duration_s")],
        "memory (MiB)": [m for m in values if m.endswith("memory_mb")],
        "CPU (%)": [m for m in values if m.endswith("cpu_pct")],
        "connections (peak)": [m for m in values if m.endswith(("clients_max", "backends_max"))],
        "recovery (s)": [m for m in values if ".recovery_" in m],
        "coverage (%)": [m for m in values if m == "suite.coverage_pct"],
    }
    for title, metrics in groups.items():
        if not metrics:
            continue
        fig = go.Figure()
        for metric in metrics:
            fig.add_trace(go.Scatter(x=nights, y=values[metric], name=metric, mode="lines+markers"))
        for f in regressed:
            if f.metric in metrics and f.shift_night:
                fig.add_vline(x=f.shift_night, line_dash="dash", line_color="crimson")
        if title.startswith("coverage"):
            fig.add_hline(y=COVERAGE_GATE, line_dash="dot", annotation_text="gate 92%")
        fig.update_xaxes(type="category")  # one point per night, not a time scale
        fig.update_layout(
            title=title,
            height=360,
            legend={"orientation": "h"},
            margin={"l": 60, "r": 20, "t": 40, "b": 30},
        )
        slug = title.split(" ")[0]
        parts.append(page.fig(fig, f"trend-{slug}"))
    names = sorted({m.split(".")[0] for m in values if m.endswith(".passed")})
    if names:
        rates = [
            100
            * (
                1
                - sum(v for v in values[f"{n}.passed"] if v is not None)
                / max(1, sum(v is not None for v in values[f"{n}.passed"]))
            )
            for n in names
        ]
        fig = go.Figure(go.Bar(x=names, y=rates))
        fig.update_yaxes(range=[0, 100])
        fig.update_layout(
            title="failure rate by experiment (%)",
            height=320,
            margin={"l": 60, "r": 20, "t": 40, "b": 30},
        )
        parts.append(page.fig(fig, "trend-failure-rate"))
    rows = "".join(
        f"<tr data-regressed='{str(f.regressed).lower()}'><td>{_esc(f.metric)}</td>"
        f"<td>{_esc(f.current if f.current is None else round(f.current, 3))}</td>"
        f"<td>{_esc(f.vs_last7_pct)}</td><td class='{'bad' if f.regressed else ''}'>"
        f"{_esc(f.reason)}</td></tr>"
        for f in findings
    )
    parts.append(
        "<table id='findings'><tr><th>metric</th><th>last night</th><th>vs last 7 "
        "nights (% worse)</th><th>trend</th></tr>" + rows + "</table>"
    )
    return "".join(parts)


def render_index(
    results_root: str | Path, history_path: str | Path | None = None, profile: str | None = None
) -> Path:
    """Write `<results_root>/index.html`: every night's verdict with a link, and the trends."""
    results_root = Path(results_root)
    suites = []
    for path in sorted(results_root.glob("*/suite.json")):
        try:
            suites.append(json.loads(path.read_text()))
        except ValueError:
            continue
    page = _Page()
    rows = "".join(
        f"<tr class='night' data-exit='{s.get('exit_code')}'><td>"
        f"<a href='{_esc(Path(s['results_dir']).name)}/index.html'>"
        f"{_esc(s['night'])}</a></td><td>{_esc(s['profile'])}</td>"
        f"<td class='{'passed' if s.get('exit_code') == 0 else 'failed'}'>"
        f"{'passed' if s.get('exit_code') == 0 else 'FAILED'}</td>"
        f"<td>{sum(e['status'] == 'passed' for e in s['experiments'])}/"
        f"{len(s['experiments'])}</td><td>{_esc(', '.join(s.get('blocking_failures', [])))}"
        f"</td></tr>"
        for s in reversed(suites)
    )
    parts = [
        "<h1>Nightly suite — all nights</h1>",
        "<table id='nights'><tr><th>night</th><th>profile</th><th>verdict</th>"
        "<th>passed</th><th>blocking failures</th></tr>" + rows + "</table>",
    ]
    if suites:
        names = sorted({e["name"] for s in suites for e in s["experiments"]})
        code = {"passed": 1, "failed": -1, "error": -1, "interrupted": 0, "not run": 0}
        z = [
            [
                next((code.get(e["status"], 0) for e in s["experiments"] if e["name"] == n), None)
                for s in suites
            ]
            for n in names
        ]
        fig = go.Figure(
            go.Heatmap(
                z=z,
                x=[s["night"] for s in suites],
                y=names,
                zmin=-1,
                zmax=1,
                colorscale=[[0, "#c62828"], [0.5, "#dddddd"], [1, "#2e7d32"]],
                showscale=False,
            )
        )
        fig.update_xaxes(type="category")
        fig.update_layout(
            title="pass / fail per experiment and night",
            height=120 + 30 * len(names),
            margin={"l": 160, "r": 20, "t": 40, "b": 30},
        )
        parts.append(page.fig(fig, "pass-fail-matrix"))
    if history_path and Path(history_path).exists():
        prof = profile or (suites[-1]["profile"] if suites else "nightly")
        parts.append(_trends_section(history_mod.load(history_path), prof, page))
    out = results_root / "index.html"
    out.write_text(_html("Nightly suite", "".join(parts)))
    return out

"""Timeline plots (matplotlib), shared by the HTML/Markdown report and the notebooks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from auditor.correlate.episodes import MISSING_NS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from auditor.correlate.audit import AuditResult

CAUSE_COLORS = {
    "propagation_gap": "#d62728",
    "inflight_reset": "#ff7f0e",
    "after_removal": "#9467bd",
    "no_endpoints": "#8c564b",
    "unrelated": "#7f7f7f",
}


def plot_rollout_timeline(res: AuditResult, rollout: str) -> Figure:
    """One row per terminated pod and node: deletion, listener closed, rule removed (gap shaded), and
    each failed connection as a tick coloured by cause; below, failures per 100 ms."""
    from matplotlib.figure import Figure

    eps = res.episodes.loc[res.episodes["rollout"] == rollout]
    tl = res.timelines.merge(eps[["episode", "pod", "deleted_ns", "exited_ns"]], on="episode")
    fl = res.failures.loc[res.failures["episode"].isin(eps["episode"])]
    t0 = int(eps["deleted_ns"].min()) if not eps.empty else 0
    rows = list(tl[["episode", "node"]].itertuples(index=False, name=None)) or [(-1, "")]
    fig = Figure(figsize=(10, 1.6 + 0.55 * len(rows)), layout="constrained")
    ax, hist = fig.subplots(2, 1, height_ratios=[max(2, len(rows)), 2], sharex=True)

    def rel(ns: int) -> float:
        return (int(ns) - t0) / 1e9

    labels = []
    for y, (ep, node) in enumerate(rows):
        r = tl.loc[(tl["episode"] == ep) & (tl["node"] == node)]
        if r.empty:
            continue
        r0 = r.iloc[0]
        labels.append(f"{r0['pod']} @ {node or '-'}")
        ax.plot([rel(r0["deleted_ns"])], [y], marker="v", color="black", ls="")
        if r0["exited_ns"] != MISSING_NS:
            ax.plot([rel(r0["exited_ns"])], [y], marker="x", color="black", ls="")
        lc, rr = int(r0["listener_closed_ns"]), int(r0["rule_removed_ns"])
        if lc != MISSING_NS:
            ax.plot([rel(lc)], [y], marker="|", color="#1f77b4", ms=14, ls="")
        if rr != MISSING_NS:
            ax.plot([rel(rr)], [y], marker="|", color="#2ca02c", ms=14, ls="")
        if lc != MISSING_NS and rr != MISSING_NS and rr > lc:
            ax.fill_between([rel(lc), rel(rr)], y - 0.3, y + 0.3, color="#d62728", alpha=0.15, lw=0)
        f = fl.loc[(fl["episode"] == ep) & (fl["node"] == node)]
        for cause, g in f.groupby("cause"):
            ts = (g["time"].to_numpy(dtype="datetime64[ns]").astype("int64") - t0) / 1e9
            ax.plot(
                ts,
                np.full(len(ts), y + 0.2),
                ls="",
                marker=".",
                ms=3,
                color=CAUSE_COLORS.get(str(cause), "grey"),
            )
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_title(f"{rollout}: ▼ deleted, | listener closed (blue), | rule removed (green), × exited")
    if not fl.empty:
        ts = (fl["time"].to_numpy(dtype="datetime64[ns]").astype("int64") - t0) / 1e9
        bins = np.arange(np.floor(ts.min()), np.ceil(ts.max()) + 0.1, 0.1)
        if len(bins) < 2:
            bins = np.array([ts.min() - 0.05, ts.min() + 0.05])
        bottom = np.zeros(len(bins) - 1)
        for cause, g in fl.groupby("cause"):
            tc = (g["time"].to_numpy(dtype="datetime64[ns]").astype("int64") - t0) / 1e9
            h, _ = np.histogram(tc, bins=bins)
            hist.bar(
                bins[:-1],
                h,
                width=0.1,
                align="edge",
                bottom=bottom,
                label=str(cause),
                color=CAUSE_COLORS.get(str(cause), "grey"),
            )
            bottom += h
        hist.legend(loc="upper right", fontsize="small")
    hist.set_ylabel("failures / 100 ms")
    hist.set_xlabel("seconds since the first deletion")
    return fig


def plot_delay_distribution(res: AuditResult) -> Figure:
    """Propagation delay per node (deletion -> this node stopped routing), one box per node."""
    from matplotlib.figure import Figure

    tl = res.timelines.dropna(subset=["propagation_delay_s"])
    fig = Figure(figsize=(7, 3.5), layout="constrained")
    ax = fig.subplots()
    if tl.empty:
        ax.text(0.5, 0.5, "no propagation delay measured", ha="center", va="center")
        return fig
    groups = [(str(n) or "-", pd.to_numeric(g["propagation_delay_s"])) for n, g in tl.groupby("node")]
    ax.boxplot(
        [g.to_numpy() for _, g in groups], tick_labels=[n for n, _ in groups], orientation="horizontal"
    )
    ax.set_xlabel("propagation delay (s)")
    ax.set_title("propagation delay per node")
    return fig


def plot_failures_by_cause(res: AuditResult) -> Figure:
    """Failed connections by cause (all causes, zero bars included), coloured as in the timeline."""
    from matplotlib.figure import Figure

    causes = list(CAUSE_COLORS)
    counts = [int(res.causes.get(c, 0)) for c in causes]
    fig = Figure(figsize=(7, 3), layout="constrained")
    ax = fig.subplots()
    bars = ax.barh(causes, counts, color=[CAUSE_COLORS[c] for c in causes])
    ax.bar_label(bars, padding=2)
    ax.invert_yaxis()
    ax.set_xlabel("failed connections")
    ax.set_title("failed connections by cause")
    return fig


def plot_prestop_what_if(table: pd.DataFrame) -> Figure:
    """Failures remaining and avoided per hypothetical preStop (a table from ``auditor.api.what_if``),
    one panel per rollout."""
    from matplotlib.figure import Figure

    rollouts = list(dict.fromkeys(table["rollout"])) if not table.empty else []
    fig = Figure(figsize=(7, 0.5 + 2.8 * max(1, len(rollouts))), layout="constrained")
    axes = np.atleast_1d(fig.subplots(max(1, len(rollouts)), 1, squeeze=False)[:, 0])
    if not rollouts:
        axes[0].text(0.5, 0.5, "no rollout to evaluate", ha="center", va="center")
        return fig
    for ax, rollout in zip(axes, rollouts, strict=True):
        t = table.loc[table["rollout"] == rollout].sort_values("prestop_s")
        x = np.arange(len(t))
        ax.bar(x, t["remaining"], color="#d62728", label="still failing")
        ax.bar(x, t["avoided"], bottom=t["remaining"], color="#2ca02c", label="avoided")
        ax.set_xticks(x, [f"{p:g} s\n{v}" for p, v in zip(t["prestop_s"], t["verdict"], strict=True)])
        ax.set_ylim(0, max(1, int(t["failed_observed"].max())) * 1.3)
        ax.set_ylabel("failed connections")
        ax.set_title(f"{rollout}: observed failures under another preStop")
        ax.legend(loc="upper right", fontsize="small")
    axes[-1].set_xlabel("preStop sleep (and the resulting verdict)")
    return fig

"""Small rendering helpers the pages share (display only: the numbers come from the service)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from graphs.hops import Hop


def hop_header(index: int, hop: Hop, running_total: float) -> str:
    model = hop.model or "(no model)"
    return (
        f"**Hop {index + 1} · {hop.node}** · `{model}` · {hop.input_tokens} in / {hop.output_tokens} out"
        f" · {hop.latency_s:.2f} s · ${hop.cost:.6f} · total ${running_total:.6f}"
    )


def render_hop(key: str, index: int, hop: Hop, running_total: float) -> None:
    """One hop as it arrives: header line, sub-query, collapsible texts, its error if any."""
    with st.container(border=True, key=f"{key}_box"):
        st.markdown(hop_header(index, hop, running_total))
        if hop.sub_query:
            st.caption(f"Sub-query: {hop.sub_query}")
        if hop.response:
            with st.expander("Response", key=f"{key}_response"):
                st.text(hop.response)
        if hop.router_text:
            with st.expander("Router text", key=f"{key}_router"):
                st.text(hop.router_text)
        if hop.error:
            st.warning(f"Hop {index + 1}: {hop.error}")


def render_notes(notes: list[dict[str, Any]]) -> None:
    for note in notes:
        (st.error if note["level"] == "error" else st.warning)(note["text"])


def summary(result: Any, reference: tuple[str, float]) -> dict[str, Any]:
    """The numbers shown beside an answer: cost, hops, models used and the strongest model's price."""
    name, reference_cost = reference
    models = list(dict.fromkeys(h.model for h in result.hops if h.model and not h.error))
    return {
        "cost": result.total_cost,
        "hops": len(result.hops),
        "models": models,
        "latency_s": result.latency_s,
        "strongest": name,
        "share": result.total_cost / reference_cost if reference_cost > 0 else None,
    }


def render_summary(numbers: dict[str, Any]) -> None:
    cost, hops, latency, models = st.columns(4)
    cost.metric("Total cost", f"${numbers['cost']:.6f}")
    hops.metric("Hops", numbers["hops"])
    latency.metric("Time", f"{numbers['latency_s']:.1f} s")
    models.metric("Models used", len(numbers["models"]), help=", ".join(numbers["models"]) or None)
    if numbers["share"] is not None:
        st.caption(
            f"{', '.join(numbers['models']) or 'No model'} · {numbers['share']:.0%} of what the same tokens "
            f"cost on {numbers['strongest']} alone"
        )


def outcome(result: Any, reference: tuple[str, float]) -> tuple[list[str], list[dict[str, Any]]]:
    """Summary lines and error/warning notes for a finished run (``result`` is a RunResult)."""
    name, reference_cost = reference
    lines = [
        f"Run #{result.run_id} · {result.status} · total ${result.total_cost:.6f} · "
        f"{result.input_tokens} in / {result.output_tokens} out · {result.latency_s:.1f} s",
        f"The same tokens on {name}, the pool's most expensive model, would have cost ${reference_cost:.6f}.",
    ]
    notes: list[dict[str, Any]] = []
    over = [h for h in result.hops if h.error and h.error.startswith("budget exceeded")]
    if over:
        notes.append(
            {
                "level": "warning",
                "text": f"Run #{result.run_id}: the budget stopped {len(over)} route call(s); "
                "the answer was given without them.",
            }
        )
    if result.status == "failed":
        notes.append(
            {
                "level": "error",
                "text": f"Run #{result.run_id} failed: {result.error}. Its partial trace "
                f"({len(result.hops)} hops) is stored: open run #{result.run_id} on the Traces page.",
            }
        )
    elif result.error:
        notes.append(
            {"level": "warning", "text": f"Run #{result.run_id}: router output problem: {result.error}"}
        )
    return lines, notes

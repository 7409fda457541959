"""Traces: filter stored runs, open one as a hop timeline, judge its answer, export as JSONL."""

from __future__ import annotations

from datetime import datetime, time, timedelta

import pandas as pd
import plotly.express as px
import streamlit as st

from app.service import GRAPHS
from app.ui.resources import service_or_stop

ANY = "(any)"
service = service_or_stop()
st.title("Traces")

with st.sidebar:
    graph = st.selectbox("Graph", [ANY, *GRAPHS], key="traces_graph")
    status = st.selectbox("Status", [ANY, "ok", "failed", "running"], key="traces_status")
    models = [ANY, *sorted({u["model"] for u in service.model_usage()} | {m.name for m in service.models})]
    model = st.selectbox("Model used", models, key="traces_model")
    dates = st.date_input("Created between", value=[], key="traces_dates")
    min_cost = st.number_input(
        "Min cost (USD)", min_value=0.0, value=0.0, format="%.6f", key="traces_min_cost"
    )
    max_cost = st.number_input(
        "Max cost (USD, 0 = no limit)", min_value=0.0, value=0.0, format="%.6f", key="traces_max_cost"
    )

days = list(dates) if isinstance(dates, tuple | list) else [dates]
rows = service.run_rows(
    graph=None if graph == ANY else graph,
    status=None if status == ANY else status,
    model=None if model == ANY else model,
    since=datetime.combine(days[0], time.min) if days else None,
    until=datetime.combine(days[-1], time.min) + timedelta(days=1) if days else None,
    min_cost=min_cost or None,
    max_cost=max_cost or None,
)
st.caption(f"{len(rows)} run(s)")
st.dataframe(pd.DataFrame(rows), hide_index=True, key="traces_table")
st.download_button(
    "Export these runs (JSONL)",
    data=service.export_jsonl([r["id"] for r in rows]),
    file_name="routegraph-runs.jsonl",
    mime="application/jsonl",
    key="traces_export",
)

run_id = st.selectbox(
    "Open run",
    [r["id"] for r in rows],
    format_func=lambda i: f"#{i}",
    index=None,
    placeholder="choose a run",
    key="traces_run",
)
run = service.get_run(run_id) if run_id is not None else None
if run is not None:
    st.subheader(f"Run #{run.id} · {run.status}")
    st.markdown(f"**Question:** {run.question}")
    st.markdown(f"**Answer:** {run.answer or '—'}")
    if run.error:
        st.warning(run.error)
    timeline = service.hop_timeline(run)
    if timeline:
        figure = px.timeline(pd.DataFrame(timeline), x_start="start", x_end="end", y="hop", color="model")
        figure.update_yaxes(autorange="reversed")
        st.plotly_chart(figure, key="traces_timeline")
    for hop in run.hops:
        with st.expander(
            f"Hop {hop.index + 1} · {hop.node} · {hop.model or '—'} · ${hop.cost:.6f}",
            key=f"traces_hop_{hop.id}",
        ):
            if hop.error:
                st.warning(hop.error)
            for title, text in (
                ("Sub-query", hop.sub_query),
                ("Router text", hop.router_text),
                ("Response", hop.response),
            ):
                if text:
                    st.markdown(f"**{title}**")
                    st.text(text)

    st.markdown("**Feedback**")
    for item in service.feedback_for(run.id):
        st.caption(
            f"{item.created_at:%Y-%m-%d %H:%M} · {item.label}"
            + (f": {item.gold_answer}" if item.gold_answer else "")
        )
    label = st.radio("Judgement", ["correct", "incorrect", "gold"], horizontal=True, key="traces_label")
    gold = st.text_input("Gold answer (for 'gold')", key="traces_gold")
    if st.button("Save feedback", key="traces_save"):
        try:
            service.add_feedback(run.id, label, gold_answer=gold or None)
            st.success(f"Feedback saved for run #{run.id}.")
        except ValueError as exc:
            st.error(str(exc))

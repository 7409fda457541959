"""Pool: the models, their prices, a live health check, and what each has been used and cost."""

from __future__ import annotations

import asyncio

import pandas as pd
import plotly.express as px
import streamlit as st

from app.ui.resources import service_or_stop

service = service_or_stop()
view = service.pool_view()
st.title("Pool")
st.caption(f"Pool file: {view['file']} · router: {view['router']}")
trained = view["trained_by"]
if trained:
    st.info(
        f"Routing with {view['router_weights']}: trained by training run {trained['id']} ({trained['kind']}, "
        f"{trained['steps']} logged steps, from {trained['source_runs']} stored runs), finished "
        f"{trained['finished_at']:%Y-%m-%d %H:%M} UTC."
    )
elif view["router_weights"]:
    st.caption(f"Router weights: {view['router_weights']} (not trained in this trace store)")

columns = ["name", "role", "backend", "mode", "price_in", "price_out", "latency_s", "descriptor"]
frame = pd.DataFrame(view["entries"])[columns].rename(
    columns={"price_in": "price_in ($/1M)", "price_out": "price_out ($/1M)"}
)
st.dataframe(frame, hide_index=True, key="pool_models")

if st.button("Check endpoints now", key="pool_health"):
    for name, healthy in asyncio.run(service.pool_health()).items():
        (st.success if healthy else st.error)(f"{name}: {'up' if healthy else 'down'}")

usage = service.model_usage()
if usage:
    frame = pd.DataFrame(usage)
    st.plotly_chart(px.bar(frame, x="model", y="calls", title="Calls per model"), key="pool_calls")
    st.plotly_chart(px.bar(frame, x="model", y="cost", title="Spend per model (USD)"), key="pool_spend")
else:
    st.info("No stored hops yet: ask a question first.")

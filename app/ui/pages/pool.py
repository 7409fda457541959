"""Pool: the models, their prices, a live health check, and what each has been used and cost."""

from __future__ import annotations

import asyncio

import pandas as pd
import plotly.express as px
import streamlit as st

from app.ui.resources import service_or_stop

service = service_or_stop()
pool = service.pool
st.title("Pool")
st.caption(f"Pool file: {pool.source or '(built in code)'}")

entries = [
    {
        "name": e.name,
        "role": "router" if e is pool.router else "candidate",
        "backend": e.backend,
        "mode": e.mode,
        "price_in ($/1M)": e.price_in,
        "price_out ($/1M)": e.price_out,
        "latency_s": e.latency_s,
        "descriptor": e.descriptor,
    }
    for e in pool.all_entries()
]
st.dataframe(pd.DataFrame(entries), hide_index=True, key="pool_models")

if st.button("Check endpoints now", key="pool_health"):
    for entry in pool.all_entries():
        healthy = asyncio.run(pool.health(entry))
        (st.success if healthy else st.error)(f"{entry.name}: {'up' if healthy else 'down'}")

usage = service.model_usage()
if usage:
    frame = pd.DataFrame(usage)
    st.plotly_chart(px.bar(frame, x="model", y="calls", title="Calls per model"), key="pool_calls")
    st.plotly_chart(px.bar(frame, x="model", y="cost", title="Spend per model (USD)"), key="pool_spend")
else:
    st.info("No stored hops yet: ask a question first.")

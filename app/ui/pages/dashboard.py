"""Dashboard: spend and runs over time, cost against accuracy per graph, where the routes went."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from app.ui.resources import service_or_stop

service = service_or_stop()
st.title("Dashboard")
data = service.dashboard()

if not data["daily"]:
    st.info("No stored runs yet: ask a question first.")
else:
    daily = pd.DataFrame(data["daily"])
    st.plotly_chart(
        px.bar(daily, x="day", y="cost", color="graph", title="Cost per day (USD)"), key="dash_cost"
    )
    st.plotly_chart(px.bar(daily, x="day", y="runs", color="graph", title="Runs per day"), key="dash_runs")
    judged = pd.DataFrame([g for g in data["by_graph"] if g["accuracy"] is not None])
    if judged.empty:
        st.info("No judged runs yet: mark answers on the Traces page to see accuracy.")
    else:
        scatter = px.scatter(
            judged,
            x="mean_cost",
            y="accuracy",
            color="graph",
            size="judged",
            title="Cost vs accuracy per graph",
        )
        st.plotly_chart(scatter, key="dash_accuracy")
    if data["routes"]:
        routes = pd.DataFrame(data["routes"])
        st.plotly_chart(
            px.pie(routes, names="model", values="hops", title="Share of hops per model"), key="dash_routes"
        )

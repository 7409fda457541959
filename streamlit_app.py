"""routegraph's Streamlit app: `streamlit run streamlit_app.py`. Pages live in app/ui/pages."""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="routegraph", layout="wide")
PAGES = "app/ui/pages"
navigation = st.navigation(
    [
        st.Page(f"{PAGES}/ask.py", title="Ask", icon=":material/chat:", default=True),
        st.Page(f"{PAGES}/traces.py", title="Traces", icon=":material/timeline:"),
        st.Page(f"{PAGES}/pool.py", title="Pool", icon=":material/hub:"),
        st.Page(f"{PAGES}/dashboard.py", title="Dashboard", icon=":material/monitoring:"),
    ]
)
navigation.run()

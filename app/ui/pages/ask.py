"""Ask: a question through a graph, its hops shown as they happen."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app.config import shown_path
from app.service import GRAPHS, QuestionError, RunResult
from app.ui import components
from app.ui.resources import default_pool_file, pool_files, service_or_stop
from graphs.hops import Hop

HISTORY = "ask_history"

st.title("Ask")
history: list[dict[str, Any]] = st.session_state.setdefault(HISTORY, [])

with st.sidebar:
    graph = st.selectbox("Graph", GRAPHS, key="ask_graph")
    try:
        files, default = pool_files(), default_pool_file()
    except Exception as exc:  # invalid settings (ConfigError)
        st.error(f"Cannot read the settings: {exc}")
        st.stop()
    pool_file = st.selectbox(
        "Pool file", files, index=files.index(default), format_func=shown_path, key="ask_pool_file"
    )
    service = service_or_stop(pool_file)
    budget = st.number_input(
        "Budget (USD)",
        min_value=0.0,
        value=float(service.settings.budget_usd),
        step=0.001,
        format="%.4f",
        key="ask_budget",
    )
    max_turns = st.number_input(
        "Max turns", min_value=1, max_value=16, value=service.settings.max_turns, key="ask_max_turns"
    )
    if st.button("Clear chat", key="ask_clear"):
        history.clear()


def show_message(number: int, message: dict[str, Any]) -> None:
    """A stored answer: the answer and its numbers first, the hop timeline collapsed below."""
    show_outcome(message)
    hops: list[Hop] = message.get("hops", [])
    if hops:
        with st.expander(f"{len(hops)} hops", expanded=False, key=f"ask_m{number}_hops"):
            total = 0.0
            for index, hop in enumerate(hops):
                total += hop.cost
                components.render_hop(f"ask_m{number}_h{index}", index, hop, total)


def show_outcome(message: dict[str, Any]) -> None:
    if message.get("answer"):
        st.markdown(f"**Answer:** {message['answer']}")
    if message.get("summary"):
        components.render_summary(message["summary"])
    for line in message.get("lines", []):
        st.caption(line)
    components.render_notes(message.get("notes", []))


def ask(number: int, question: str) -> dict[str, Any]:
    """Stream one question, each hop drawn as it arrives in a collapsed timeline under the answer's place;
    returns the message to keep in history."""
    message: dict[str, Any] = {"role": "assistant", "hops": [], "notes": []}
    answer_slot = st.container()
    total = 0.0
    with st.status("Routing…", expanded=False) as timeline:
        try:
            for item in service.stream(question, graph=graph, budget_usd=budget, max_turns=int(max_turns)):
                if isinstance(item, Hop):
                    total += item.cost
                    index = len(message["hops"])
                    timeline.update(label=f"Hop {index + 1}: {item.node} · {item.model or 'no model'}")
                    components.render_hop(f"ask_m{number}_h{index}", index, item, total)
                    message["hops"].append(item)
                elif isinstance(item, RunResult):
                    reference = service.reference_cost(item.input_tokens, item.output_tokens)
                    message["answer"] = item.answer
                    message["summary"] = components.summary(item, reference)
                    message["lines"], message["notes"] = components.outcome(item, reference)
        except QuestionError as exc:
            message["notes"] = [{"level": "error", "text": f"Question refused: {exc}"}]
        except Exception as exc:  # the store or the service itself failed
            message["notes"] = [{"level": "error", "text": f"The run stopped: {type(exc).__name__}: {exc}"}]
        failed = any(note["level"] == "error" for note in message["notes"])
        timeline.update(label=f"{len(message['hops'])} hops", state="error" if failed else "complete")
    with answer_slot:
        show_outcome(message)
    return message


for number, message in enumerate(history):
    with st.chat_message(message["role"]):
        if message["role"] == "user":
            st.markdown(message["content"])
        else:
            show_message(number, message)

question = st.chat_input("Ask a question", key="ask_input")
if question is not None:
    history.append({"role": "user", "content": question})
    with st.chat_message("user"):
        st.markdown(question)
    with st.chat_message("assistant"):
        history.append(ask(len(history), question))

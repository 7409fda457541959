"""LangGraph state graphs, one package per published router."""

"""The OpenAI-compatible API's parts below the app (``app.server``): the request schema and its checks,
OpenAI-shaped errors, and admission control (runs at once, a bounded queue, 429 beyond)."""

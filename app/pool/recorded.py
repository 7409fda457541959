"""``backend: recorded``: replay a model's recorded score on a query instead of calling it.

An outcome file is JSONL of ``{question, scores: {served model id: score}}`` rows. A recorded call returns
the score with a placeholder text and an estimated cost; :meth:`app.pool.pool.Pool.ask` routes recorded
entries here.
"""

from __future__ import annotations

import json
from pathlib import Path

from app.pool.entries import ModelEntry, PoolError
from graphs.ports import CallResult, EndpointError, estimate_tokens


def replay(entry: ModelEntry, path: Path, query: str) -> CallResult:
    """The recorded outcome of ``entry`` on ``query`` in ``path``: its score, a placeholder text, a cost.

    Tokens are estimated, not measured: input = ceil(len(query) / 4), output = ``entry.output_tokens``.
    """
    scores = load_outcomes(path).get(" ".join(query.split()))
    if scores is None:
        raise EndpointError(entry.name, f"query not in recorded outcomes {path}")
    if entry.served_id not in scores:
        raise EndpointError(entry.name, f"no score for {entry.served_id!r} in {path}")
    score = float(scores[entry.served_id])
    tokens_in, tokens_out = estimate_tokens(query), entry.output_tokens
    return CallResult(
        model=entry.name,
        text=f"[recorded outcome of {entry.name}: score {score:g}]",
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cost=entry.cost(tokens_in, tokens_out),
        latency_s=0.0,
        finish_reason="stop",
        score=score,
    )


_OUTCOMES: dict[Path, dict[str, dict[str, float]]] = {}


def load_outcomes(path: str | Path) -> dict[str, dict[str, float]]:
    """Whitespace-normalised question → {served model id: score}, read once per file and cached."""
    key = Path(path).resolve()
    table = _OUTCOMES.get(key)
    if table is None:
        try:
            lines = key.read_text().split("\n")  # not splitlines(): questions hold U+2028
        except FileNotFoundError:
            raise PoolError(f"{path}: recorded-outcome file does not exist") from None
        table = {}
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                table[" ".join(str(row["question"]).split())] = {
                    str(k): float(v) for k, v in row["scores"].items()
                }
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise PoolError(f"{path}:{number}: not a {{question, scores}} row ({exc})") from None
        _OUTCOMES[key] = table
    return table

"""Router-R1 (arXiv 2506.09033): a router LLM interleaving <think> with <search> route calls."""

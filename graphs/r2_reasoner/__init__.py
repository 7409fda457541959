"""R2-Reasoner (arXiv 2506.05901): decompose a question, give each subtask the cheapest able model."""

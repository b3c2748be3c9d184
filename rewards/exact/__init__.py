"""Exact-answer verification for factual questions with known answers (pure Python, no Ray)."""
from rewards.exact.answer import check_answer, extract_answer
from rewards.exact.knowledge import KnowledgeError, load_knowledge, lookup
from rewards.exact.normalization import normalize
from rewards.exact.row import answers_problem, row_problem, score_row

__all__ = ["KnowledgeError", "answers_problem", "check_answer", "extract_answer", "load_knowledge", "lookup",
           "normalize", "row_problem", "score_row"]

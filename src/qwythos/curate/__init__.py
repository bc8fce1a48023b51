"""Curation: raw instruction, chat and story data into a budgeted, deduplicated, decontaminated,
pathway-labelled, curriculum-ordered training set (``qwythos curate``).

records -> readers -> pipeline (normalise, label rules, quality, decontam, features) -> run (dedup, label
embeddings, difficulty, select, curriculum) -> dataset folder; select.select_next for active learning.
"""

from ..dataset import read_dataset, read_pool
from ..records import Record

__all__ = ["Record", "read_dataset", "read_pool"]

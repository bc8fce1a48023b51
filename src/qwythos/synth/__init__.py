"""Synthetic data with verification: teachers (local model, any OpenAI-compatible endpoint) behind a SQLite
request cache, generators (reasoning, narrative, role-play, mixed), verifiers and best-of-n selection.

``qwythos synth`` (``synth.run.synth``) writes chat records that ``qwythos curate`` reads, plus a run report.
"""

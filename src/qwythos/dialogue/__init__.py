"""The storage-and-data core of the dialogue engine: character cards (SillyTavern V1/V2/V3, JSON and PNG),
lorebooks with a token-budgeted selection report, game state as the replay of a typed event log with
deterministic tools on it, and SQLite persistence (characters, sessions, messages, events, facts, summaries).
No model and no HTTP here: the engine and `qwythos serve` build on these parts.
"""

"""OpenAI-compatible serving (FastAPI + uvicorn) and the terminal chat, both with live gear traces."""

"""The network edge: FastAPI app, WebSocket and REST routers, auth."""

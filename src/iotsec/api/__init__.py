"""The REST API: a FastAPI app, thin routers over the service layer."""

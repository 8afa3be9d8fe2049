"""Route modules: each handler validates, calls one function, shapes the response."""

"""The endpoints, one router per group: search, documents, service (health, metrics, the page) and admin.

documents, service and admin each have a module-level `router`; search is made per app by `search_router`, since
its request model and query bounds carry that server's settings into validation and the published schema.
"""

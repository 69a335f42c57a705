"""The ASGI application: uvicorn serves the live streams in production, daphne under `manage.py runserver`.

Under ASGI, Django runs each request's synchronous code (middleware, DRF views, the stream's
authentication) on a thread of that request's own, which ends with the request. A persistent
database connection (DATABASE_CONN_MAX_AGE, right for gunicorn's long-lived sync workers) would
be left open by every request here, so under ASGI every request closes its connection when it
ends. The streams' broadcaster keeps its own two connections per process (inbox/stream.py).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notifications_project.settings")
application = get_asgi_application()

from django.db import connections  # noqa: E402 - after Django is set up

for alias in connections:
    connections.settings[alias]["CONN_MAX_AGE"] = 0

"""The web pages: the back-office dashboard (staff login) and the patient's own page.

Server-rendered with Jinja2 from the API process; ``api.web.routes.router`` is included by
``api.main.create_app``. See docs/dashboard.md.
"""

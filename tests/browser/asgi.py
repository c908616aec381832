"""The ASGI application of the browser tests' live server (run by daphne in a subprocess).

It is gbplatform.asgi's application unchanged, except that static files are served from the finders
(static/ and app folders) because a test run does not run collectstatic. The environment names the test
run's database and Redis (tests.browser.harness.LiveServer sets it).
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gbplatform.settings.test")

from django.conf import settings  # noqa: E402

# Read by WhiteNoiseMiddleware when the ASGI handler loads its middleware, i.e. on the import below.
settings.WHITENOISE_USE_FINDERS = True

from gbplatform.asgi import application  # noqa: E402, F401

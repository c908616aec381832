"""The web process's start (gbplatform.asgi): the LLM SDKs and the offline embedding model are loaded beside
serving, so the first question that needs them (an LLM turn, a KB search, a cache lookup) does not wait."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Imports the ASGI module as daphne does, waits for the preload thread, reports what got loaded.
PROBE = """
import json, sys, threading
from gbplatform import asgi
from apps.kb import embeddings
for thread in threading.enumerate():
    if thread.name == "web-preload":
        thread.join(120)
print(json.dumps({"model": embeddings._runtime is not None, "llm": "apps.llm.services" in sys.modules,
                  "anthropic": "anthropic" in sys.modules}))
"""


@pytest.mark.parametrize("preload", [True, False])
def test_the_llm_layer_and_embedding_model_load_when_the_process_starts(preload):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "gbplatform.settings.test", "WEB_PRELOAD": str(preload).lower()}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=180, check=True)
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == {"model": preload, "llm": preload, "anthropic": preload}

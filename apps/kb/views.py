import json

from django.http import JsonResponse
from django.views.decorators.http import require_POST

from apps.accounts.permissions import api_access
from apps.accounts.roles import Role
from apps.bots.models import Bot
from apps.core.ratelimit import ratelimited
from apps.kb.models import KnowledgeBase
from apps.kb.search import MAX_LIMIT, MODES, kb_search

# A search request is a few fields; anything bigger is a mistake or abuse.
MAX_BODY_BYTES = 16 * 1024
MAX_QUERY_CHARS = 2000


def _bad(message: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@api_access(role=Role.VIEWER, scope="kb:search")
@ratelimited("api")  # below api_access: a key is verified, and counted per key under rate-limit-by=api-key
@require_POST
def kb_search_api(request):
    """`POST /api/kb/search` {"bot", "query", "kbs"?, "limit"?, "mode"?}: chunks with scores and sources."""
    if len(request.body) > MAX_BODY_BYTES:
        return _bad(f"request body over {MAX_BODY_BYTES} bytes", 413)
    try:
        body = json.loads(request.body or b"{}")
    except json.JSONDecodeError as exc:
        return _bad(f"body is not JSON: {exc.msg} at character {exc.pos}")
    if not isinstance(body, dict):
        return _bad("body must be a JSON object")
    query, bot_name = body.get("query"), body.get("bot")
    if not isinstance(query, str) or not query.strip() or len(query) > MAX_QUERY_CHARS:
        return _bad(f"'query' must be a non-empty string of at most {MAX_QUERY_CHARS} characters")
    bot = Bot.objects.filter(name=bot_name).first() if isinstance(bot_name, str) else None
    if bot is None:
        return _bad("'bot' must name a bot of this tenant", 404)
    kbs = body.get("kbs") or list(KnowledgeBase.objects.filter(bot=bot).values_list("name", flat=True))
    if not isinstance(kbs, list) or not all(isinstance(k, str) for k in kbs):
        return _bad("'kbs' must be a list of knowledge-base names")
    limit, mode = body.get("limit", 5), body.get("mode", "hybrid")
    if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        return _bad(f"'limit' must be an integer from 1 to {MAX_LIMIT}")
    if mode not in MODES:
        return _bad(f"'mode' must be one of {', '.join(MODES)}")
    result = kb_search(bot=bot, kbs=kbs, query=query, limit=limit, mode=mode)
    return JsonResponse({"mode": result.mode, "degraded": result.degraded, "hits": [h.as_dict() for h in result.hits]})

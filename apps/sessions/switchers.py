"""Format switchers (spec 3.5.5): toggles a script offers with ADD SWITCHER; the user switches them on per
message (`active_switchers` in the frame) and their prompts join the LLM's system prompt.

Eight ids have a built-in prompt (upstream's set); any other id is its own prompt text. Only switchers the
session's scripts offered can be switched on: a client cannot put text of its own into the system prompt.
"""

from __future__ import annotations

# Our own wording for upstream's built-in ids.
BUILT_IN_PROMPTS = {
    "tables": "Where the content allows it, present the answer as a Markdown table.",
    "infographic": "Present the answer as a short visual summary: the key figures and facts, one per line, "
                   "each with a fitting emoji.",
    "cards": "Present the answer as short cards: a bold title line, then two or three lines, for each item.",
    "list": "Present the answer as a bulleted list.",
    "comparison": "Present the answer as a comparison of the options against the criteria that matter, "
                  "in a Markdown table.",
    "timeline": "Present the answer as a timeline: ordered or dated steps, one per line.",
    "markdown": "Format the answer with Markdown: headings, lists and emphasis where they help.",
    "chart": "When the answer involves numbers, include them as a small table that could be drawn as a chart.",
}
# Ids one message may switch on (a client sending thousands is refused quietly: the rest are ignored).
ACTIVE_MAX = 12


def active_switchers_clean(raw: object, state: dict) -> list[str]:
    """The ids of `raw` (a frame's `active_switchers`) that the session offers, in the session's order."""
    if not isinstance(raw, list | tuple):
        return []
    wanted = {str(item) for item in raw[:ACTIVE_MAX * 4] if isinstance(item, str)}
    offered = [s["id"] for s in state.get("switchers") or [] if isinstance(s, dict) and "id" in s]
    return [switcher_id for switcher_id in offered if switcher_id in wanted][:ACTIVE_MAX]


def switcher_prompts(state: dict) -> list[str]:
    """The prompts of the switchers active in the session, for the system prompt."""
    return [BUILT_IN_PROMPTS.get(switcher_id.lower(), switcher_id)
            for switcher_id in active_switchers_clean(state.get("active_switchers"), state)]

"""The keyword vocabulary: which word sequences are keywords, and which are refused.

A keyword is a phrase of one or more words (`SEND MAIL`, `GET BOT MEMORY`). The parser matches the
longest phrase at the start of a statement (or in expression position when arguments follow), parses
its arguments generically (expressions separated by commas or by connector words such as `TO`, `AS`,
`WITH`) and the VM hands them to the host method named after the phrase (`send_mail`). Keeping the
vocabulary in one table means a keyword added here is immediately parsed, checked and dispatched.
"""

from __future__ import annotations

# Keywords that reach the host. The value is the host method that implements them; aliases point to
# the same method (spec 3.11: ADD TOOL is USE TOOL, SEND EMAIL is SEND MAIL).
KEYWORDS: dict[str, str] = {
    # dialog
    "TALK": "talk", "TALK TO": "talk_to", "PRINT": "log", "SEND MESSAGE": "talk",
    # LLM, context, prompts
    "LLM": "llm", "SET CONTEXT": "set_context", "SET_CONTEXT": "set_context", "USE MODEL": "use_model",
    "SET ANSWER MODE": "set_answer_mode", "SET USER": "set_user", "SET MODEL ROUTING": "use_model",
    "GET CURRENT MODEL": "get_current_model", "LIST MODELS": "list_models", "IMPROVE TEXT": "llm",
    "REWRITE": "llm", "ANSWER": "talk", "REFRESH": "keyword",
    # knowledge
    "USE KB": "use_kb", "USE_KB": "use_kb", "ADD KB": "use_kb", "ADD_KB": "use_kb", "CLEAR KB": "clear_kb",
    "CLEAR_KB": "clear_kb", "THINK KB": "think_kb", "USE WEBSITE": "use_website", "USE_WEBSITE": "use_website",
    "CLEAR WEBSITES": "clear_websites", "KB STATISTICS": "kb_statistics", "KB COLLECTION STATS": "kb_statistics",
    "KB DOCUMENTS COUNT": "kb_statistics", "KB DOCUMENTS ADDED SINCE": "kb_statistics",
    "KB LIST COLLECTIONS": "kb_statistics", "KB STORAGE SIZE": "kb_statistics",
    # tools
    "USE TOOL": "use_tool", "USE_TOOL": "use_tool", "ADD TOOL": "use_tool", "CLEAR TOOLS": "clear_tools",
    # suggestions
    "ADD SUGGESTION": "add_suggestion", "ADD SUGGESTION TEXT": "add_suggestion",
    "ADD SUGGESTION TOOL": "add_suggestion", "CLEAR SUGGESTIONS": "clear_suggestions",
    "ADD SWITCHER": "add_switcher", "CLEAR SWITCHERS": "clear_switchers",
    # memory
    "SET BOT MEMORY": "set_bot_memory", "SET_BOT_MEMORY": "set_bot_memory", "GET BOT MEMORY": "get_bot_memory",
    "GET_BOT_MEMORY": "get_bot_memory", "SET USER MEMORY": "set_user_memory",
    "GET USER MEMORY": "get_user_memory", "REMEMBER USER FACT": "remember_user_fact",
    "GET USER FACTS": "get_user_facts", "CLEAR USER MEMORY": "clear_user_memory", "REMEMBER": "remember",
    "RECALL": "recall", "BOT SHARE MEMORY": "keyword", "BOT SYNC MEMORY": "keyword",
    "SET SESSION": "set_session", "GET SESSION": "get_session",
    # data
    "FIND": "find", "SAVE": "save", "INSERT": "insert", "UPDATE": "update", "DELETE": "delete",
    "MERGE": "merge", "SAVE FROM UNSTRUCTURED": "save_from_unstructured", "SEARCH": "search",
    "DETECT": "keyword", "AGGREGATE": "aggregate", "GROUP BY": "keyword", "PIVOT": "keyword",
    "FILL": "keyword", "SYNCHRONIZE": "keyword",
    # HTTP
    "GET": "get", "POST": "http_post", "PUT": "http_put", "PATCH": "http_patch",
    "DELETE HTTP": "http_delete", "SET HEADER": "set_header", "CLEAR HEADERS": "clear_headers",
    "GRAPHQL": "graphql", "SOAP": "soap", "WEBHOOK": "webhook", "USE ACCOUNT": "use_account",
    "USE MCP": "keyword",
    # files
    "READ": "read_file", "WRITE": "write_file", "COPY": "copy_file", "MOVE": "move_file",
    "DELETE FILE": "delete_file", "DELETE_FILE": "delete_file", "LIST": "list_files", "DIR": "list_files",
    "UPLOAD": "upload", "DOWNLOAD": "download", "COMPRESS": "keyword", "EXTRACT": "keyword",
    "GENERATE PDF": "keyword", "MERGE PDF": "keyword", "SEND FILE": "send_file",
    # communication
    "SEND MAIL": "send_mail", "SEND_MAIL": "send_mail", "SEND EMAIL": "send_mail",
    "SEND TEMPLATE": "send_template", "SEND_TEMPLATE": "send_template", "SEND SMS": "send_sms",
    "SEND_SMS": "send_sms", "SEND TO": "talk_to", "BROADCAST": "keyword", "CREATE DRAFT": "keyword",
    "ADD MEMBER": "keyword", "ADD_MEMBER": "keyword", "TRANSFER TO HUMAN": "transfer_to_human",
    "TRANSFER_TO_HUMAN": "transfer_to_human",
    # scheduling, events, tasks
    "SET SCHEDULE": "set_schedule", "PUBLISH EVENT": "keyword", "WAIT FOR EVENT": "keyword",
    "CREATE TASK": "create_task", "CREATE_TASK": "create_task", "BOOK": "book", "BOOK_MEETING": "book",
    "CHECK_AVAILABILITY": "keyword",
    # multi-agent, media, misc (generic host keyword)
    "ADD BOT": "keyword", "REMOVE BOT": "keyword", "LIST BOTS": "keyword", "DELEGATE": "keyword",
    "SEND TO BOT": "keyword", "BROADCAST TO BOTS": "keyword", "TRANSFER CONVERSATION": "keyword",
    "SET BOT PRIORITY": "keyword", "BOT REFLECTION": "keyword", "REFLECT ON": "keyword", "CARD": "keyword",
    "WEATHER": "keyword", "FORECAST": "keyword", "PLAY": "keyword", "QR CODE": "keyword",
    "DETECT FACES": "keyword", "POST TO": "keyword", "START MEET": "keyword", "JOIN MEET": "keyword",
    "LEAVE MEET": "keyword", "INVITE TO MEET": "keyword", "SCORE LEAD": "keyword", "AI SCORE LEAD": "keyword",
    "GET LEAD SCORE": "keyword", "QUALIFY LEAD": "keyword", "UPDATE LEAD SCORE": "keyword",
    "GET QUEUE": "keyword", "NEXT IN QUEUE": "keyword", "ASSIGN CONVERSATION": "keyword",
    "RESOLVE CONVERSATION": "keyword", "TAG CONVERSATION": "keyword", "ADD NOTE": "keyword",
    "SET PRIORITY": "keyword", "GET ATTENDANTS": "keyword", "SET ATTENDANT STATUS": "keyword",
    "GET ATTENDANT STATS": "keyword", "POLISH MESSAGE": "keyword", "GET SMART REPLIES": "keyword",
    "GET SUMMARY": "keyword", "GET TIPS": "keyword", "ANALYZE SENTIMENT": "keyword",
    "GET CUSTOMER HISTORY": "keyword", "CREATE SITE": "keyword", "PUBLISH": "keyword",
    "CREATE_DRAFT": "keyword", "CACHE SET": "keyword", "CACHE GET": "keyword", "RECORD METRIC": "keyword",
    # legacy/undocumented words found in the upstream templates: parsed so the scripts compile,
    # implemented only by hosts that choose to (the in-memory host refuses them at run time)
    "QUERY METRICS": "keyword", "QUERY": "keyword", "PRODUCT": "keyword", "SCAN BARCODE": "keyword",
    "SEE": "keyword", "SCRAPE": "keyword", "SCRAPE_ALL": "keyword", "GENERATE CODE": "keyword",
    "SET MAX LINES": "keyword", "GENERATE_PDF": "keyword", "GROUP_BY": "keyword", "MERGE_PDF": "keyword",
    "GENERATE SECURE LINK": "keyword",
    "IMAGE": "keyword", "LOG ACTIVITY": "keyword", "LOG": "log", "ALLOW ROLE": "keyword",
    "NOTIFY ATTENDANT": "keyword", "NOTIFY": "keyword", "SAVE_FROM_UNSTRUCTURED": "save_from_unstructured",
    "SET PAGE MODE": "keyword", "FILTER": "filter", "MAP": "keyword",
    # multi-bot workflows: upstream registers ORCHESTRATE WORKFLOW "name" and STEP n: BOT "b" "action".
    # `STEP` lines (with the PARALLEL/BRANCH and HUMAN APPROVAL/TIMEOUT/ON TIMEOUT forms of the
    # templates) and inline SQL `x = SELECT ...` are parsed by the parser itself (`stmt_STEP`,
    # `inline_sql`) and reach `Host.keyword("STEP" | "SELECT", ...)`. Only a host with a workflow
    # engine runs them; SELECT is never executed as SQL by this engine.
    "ORCHESTRATE WORKFLOW": "keyword", "DELAY": "keyword",
    # more legacy (v3) words of the templates: a chart image of data, resetting a sync report, a
    # company's website found by search
    "CHART": "keyword", "RESET REPORT": "keyword", "WEBSITE OF": "keyword", "CREATE_SITE": "keyword",
    "ESCALATE": "keyword",
}

# Keywords that evaluate without the host (object construction, JSON helpers of the templates).
PURE_KEYWORDS: frozenset[str] = frozenset({"NEW OBJECT", "CREATE OBJECT", "NEW ARRAY", "JSON PARSE"})

# Refused at compile time with the reason shown to the author (architecture: no code execution).
REFUSED: dict[str, str] = {
    "RUN PYTHON": "running Python code is not allowed in the sandbox",
    "RUN JAVASCRIPT": "running JavaScript code is not allowed in the sandbox",
    "RUN JS": "running JavaScript code is not allowed in the sandbox",
    "RUN BASH": "running shell commands is not allowed in the sandbox",
}

# Words that separate keyword arguments (`COPY a TO b`, `SEND FILE x AS y`).
CONNECTORS: frozenset[str] = frozenset({
    "TO", "AS", "WITH", "FROM", "USING", "INTO", "BY", "AT", "ON", "OF", "SUBJECT", "WHERE", "VALUES",
    "TIMEOUT", "REFRESH", "DEFAULT", "FOR", "TRIGGER", "TOOLS", "SCHEDULE", "OPTIONS", "ATTACHMENT",
    "FILTER", "RECURSIVE", "APPEND", "SET", "IN", "TONE", "EXPIRES", "BODY",
})

# After `AS`, these bare words are modes, not variables (`READ "f.csv" AS TABLE`).
MODE_WORDS: frozenset[str] = frozenset({"TABLE", "LINES", "LINK", "JSON", "TEXT", "CSV", "BINARY"})

# Words that can never start an expression operand: they are operators or block syntax.
OPERATOR_WORDS: frozenset[str] = frozenset({"AND", "OR", "NOT", "MOD", "THEN", "IS", "XOR", "LIKE"})

_PHRASES: dict[str, list[tuple[str, ...]]] = {}
for _name in list(KEYWORDS) + list(PURE_KEYWORDS) + list(REFUSED):
    _words = tuple(_name.split())
    _PHRASES.setdefault(_words[0], []).append(_words)
for _list in _PHRASES.values():
    _list.sort(key=len, reverse=True)


def phrases_starting_with(word: str) -> list[tuple[str, ...]]:
    """Keyword phrases whose first word is `word` (upper case), longest first."""
    return _PHRASES.get(word, [])

"""Sandbox limits of one BASIC run, each with the reason it exists.

A script is code written by tenant admins (or copied from templates) and runs inside the web and
worker processes, so every resource it can consume is bounded here and nowhere else.
"""

from __future__ import annotations

# Instructions per run (between two suspensions). Upstream caps loops at 100 000 iterations; a
# budget on instructions also catches recursion and GOTO loops. 5M is a few seconds of CPU at worst.
MAX_INSTRUCTIONS = 5_000_000

# Wall time of one run slice in seconds; upstream kills scripts after 300 s, but a run slice holds a
# chat turn (and a worker), so ours is shorter. Host calls (LLM, HTTP) have their own timeouts.
MAX_WALL_SECONDS = 60.0

# How often (in instructions) the VM looks at the clock: checking every instruction would halve speed.
CLOCK_CHECK_INTERVAL = 4096

# Work units (apps/basic/meter.py). The budget counts instructions, but one instruction can do much work (a
# SORT of 100 000 items, `=` on two large arrays, TOYAML of a deep value): 5000 SORTs ran 26 s under a 2 s limit,
# since the clock was looked at every 4096 instructions whatever they did. Such operations add units in
# proportion to their work, one unit being about a simple instruction's time (0.2-0.5 us), and the VM looks at
# the budget and the clock whenever the units add up to CLOCK_CHECK_INTERVAL. Elements the engine's own Python
# code visits one by one (compared, sized, keyed for SORT/UNIQUE, lower-cased, written as YAML) cost one unit
# each; the rates below are for work done by Python's C code.
MIN_CHARGED_STEPS = 16  # fewer elements visited one by one are part of the instruction's own unit
WORK_ITEMS_PER_UNIT = 32  # elements copied or scanned (list slices and concatenation: ~7 ns each)
WORK_CHARS_PER_UNIT = 2048  # characters copied or searched (string concatenation, find: ~0.1 ns each)
WORK_TEXT_CHARS_PER_UNIT = 8  # characters of JSON written or parsed (~20-40 ns each)
SORT_COMPARISONS_PER_UNIT = 4  # comparisons of sort keys (~50 ns each); a SORT of n items makes n*log2(n)
LIKE_STEPS_PER_UNIT = 128  # character comparisons of LIKE's worst case (values.MAX_LIKE_STEPS; ~2 ns each)

# Case-insensitive member access on a map of at least this many keys uses an index of its keys by their
# lower case, built once per run (scanning every key on each miss was 27 ms per `m.missing` on a map of a
# million keys); smaller maps are scanned. At most this many maps are indexed at once per run (each index
# holds its map, so a script's dropped maps are not kept alive beyond these).
LOWER_KEY_INDEX_MIN_KEYS = 64
LOWER_KEY_INDEX_MAPS = 8

# Bits of an integer that arithmetic and INT/FIX/FLOOR/CEIL/ROUND keep exact (VB's Long is 64-bit). Past it a
# result is a float (VB's Double) and CINT/CLNG refuse it as "number too large": Python integers grow without
# bound (CINT("1e300") was a 997-bit integer, and multiplying two such failed as an internal OverflowError).
MAX_INTEGER_BITS = 63

# Longest string a script may build (upstream: 10 MB strings); protects memory of the worker.
MAX_STRING_CHARS = 10_000_000

# Most elements a script may put in one array (upstream: 1 000 000).
MAX_ARRAY_ITEMS = 1_000_000

# Deepest nesting of arrays/maps in a value that leaves the VM (TALK, a saved state, a RETURN value).
# Python's encoders recurse once per level (`a = [a]` 5000 times crashed state saving with a
# RecursionError); real data, API responses included, nests a dozen levels.
MAX_VALUE_DEPTH = 64

# Most keys a script may put in one map: a map is a record or a lookup table, bounded like an array.
MAX_MAP_KEYS = 1_000_000

# Bytes of values one run may hold at once (apps/basic/memory.py; the VM's `max_memory` overrides it). The limits
# above bound each value, not how many a run keeps: a loop storing 9 MB texts in a map held 2.6 GB within its
# instruction budget (which allowed ~9 GB), in the web process that runs every tenant's chat turns, and a
# MemoryError there is every tenant's outage. 256 MiB fits the largest single values the other limits allow with
# room (a 10-million-character text is 10-40 MB, a 10 MB HTTP response parsed into maps and arrays some 50-100 MB)
# and is far above what dialogs hold (kilobytes). A web process runs CHAT_TURNS_PER_TENANT (8) turns of one tenant
# at once while other tenants have turns to run (up to CHAT_TURN_THREADS - 8 = 24 when it is alone), so a tenant's
# scripts hold at most 2 GiB of a busy process; all 32 turn threads hoarding at once could hold 8 GiB, which is
# why the container's memory limit stays the backstop for the whole process (a MemoryError then ends the run that
# was allocating, as a limit error, not the process).
MAX_HELD_BYTES = 256 * 1024 * 1024
# How the VM keeps to it without measuring on every instruction (apps/basic/memory.py has the reasoning and the
# error bounds). Values at least this large are tracked from the moment the engine builds them: texts of this many
# characters (the size from which building a text is charged as work)...
HELD_TRACKED_TEXT_CHARS = WORK_CHARS_PER_UNIT
# ...and arrays/maps of this many items (8 KiB of slots).
HELD_TRACKED_ITEMS = 1024
# Bytes an instruction, and a unit of charged work, are assumed to add beyond the tracked values. An instruction
# builds at most one untracked text of under 2048 characters in the usual statement (`m[k] = s & i` stores 2 KB
# every two instructions, with the loop's NEXT) and small maps and arrays; charged work builds at most about
# 2048 bytes a unit (texts are charged a unit per 2048 characters; SPLIT into short texts is ~60 bytes an item at
# 32 items a unit). The run is measured when the last measure, plus the tracked values, plus these rates since,
# could pass the limit.
HELD_BYTES_PER_INSTRUCTION = 1024
HELD_BYTES_PER_WORK_UNIT = 2048
# Elements a measure visits per unit of work charged to the run (a visit is ~80-400 ns of Python).
HELD_WALK_ITEMS_PER_UNIT = 2
# Texts this long or longer are counted once however many places hold them (ids kept in a set while measuring);
# a shorter one is counted at each place (at most ~300 bytes too many per extra place).
HELD_SHARED_TEXT_CHARS = 256
# Tracked values nothing else holds any more are let go when this many bytes (or a quarter of the tracked bytes,
# whichever is more) were tracked since the last time: the most garbage the tracking keeps alive.
HELD_PRUNE_BYTES = 8 * 1024 * 1024

# Total characters of TALK output in one run; a runaway loop must not flood the chat.
MAX_OUTPUT_CHARS = 1_000_000

# Characters of one PRINT or LOG_* line: they go to the server log (and a job's output), which a script must
# not flood; a longer line is cut here, before its pieces are joined.
MAX_LOG_MESSAGE_CHARS = 2_000

# Number of TALK messages in one run, for the same reason.
MAX_MESSAGES = 2_000

# Size in bytes of a serialised suspended state (its JSON text in UTF-8, as PostgreSQL stores it); it is
# stored with the chat session on every HEAR.
MAX_STATE_BYTES = 5_000_000

# Depth of SUB/FUNCTION calls (upstream recursion depth 100).
MAX_CALL_DEPTH = 100

# Longest WAIT in seconds (upstream caps WAIT at 300 s).
MAX_WAIT_SECONDS = 300.0

# Distinct SET SCHEDULE crons one script may register (spec 3.8: at most 100 scheduled tasks per bot). Each one
# puts a job on the platform's shared queue every time it fires: a script of thousands of "every minute" lines
# would flood every tenant's jobs. Identical crons count once (they run the script once).
MAX_SCHEDULES = 100

# Invalid answers to a typed HEAR before the script continues with an empty value (spec 3.5.1).
MAX_HEAR_TRIES = 3

# Largest source file the compiler accepts; a .bas beyond this is not a dialog.
MAX_SOURCE_CHARS = 2_000_000

# In a BEGIN TALK line a `${...}` that is not an expression is read leniently (README); trying one parses the
# text up to its closing brace, and nested ones (`${ a ${ a ${ … } } }`) can all fail. The text tried on one
# line is capped at this multiple of the line's length (past it a `${` is read by the lenient rule alone), so
# compiling stays linear in the source: it is redone on every resume.
LENIENT_INTERPOLATION_TRIES_FACTOR = 4

# HTTP keywords: response bytes read and seconds waited (upstream GET 30 s, POST 60 s).
MAX_HTTP_RESPONSE_BYTES = 10_000_000
HTTP_TIMEOUT_SECONDS = 30.0

# Redirects an HTTP keyword follows; each hop goes through the SSRF guard again.
MAX_HTTP_REDIRECTS = 5

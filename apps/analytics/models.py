"""Daily aggregates of a tenant's conversations: what the analytics pages read instead of raw messages.

One `DailyStat` row per (day, bot, channel) and the day's most asked questions per bot (`DailyQuestion`),
rebuilt from `apps.sessions` messages by `apps.analytics.services.daily_stats_recompute`. A page over 90
days reads at most 90 x bots x channels rows, whatever the number of messages.

Days are calendar days in settings.TIME_ZONE. Definitions (also in README.md):
- messages: every stored message; user_messages: role user; bot_messages: role assistant.
- sessions: sessions with at least one message that day; new_sessions: sessions created that day.
- active_users: distinct chat users who sent a message that day (not additive across days).
- llm_answers: assistant messages produced by a successful LLM call (their meta has "cached");
  cached_answers: those served from the semantic cache; offline_answers: answers quoting the KB because
  no model was configured or none answered (meta "offline").
- unanswered: answers to a question (meta has "citations") with no tool call that were offline, cited
  no KB passage, or whose best passage scored under ANSWER_LOW_SCORE.
- latency: a histogram over LATENCY_BUCKETS_MS of assistant latency_ms; percentiles are read from it.
"""

from django.contrib.postgres.fields import ArrayField
from django.db import models

from apps.bots.models import Bot

# Upper bounds (ms, inclusive) of the latency histogram's buckets; a last bucket holds everything slower.
# Roughly 1.4x apart: a percentile read from the histogram is off by at most one bucket's width (about a
# third of the value), good enough to see a p95 move from 2 s to 4 s. 21 buckets keep a row small.
LATENCY_BUCKETS_MS = (50, 100, 150, 200, 300, 400, 500, 700, 1000, 1400, 2000, 2800, 4000, 5600, 8000,
                      11000, 16000, 22000, 32000, 45000, 64000)
# Characters of a normalised question kept: long pastes are not "questions" worth counting apart.
QUESTION_MAX_CHARS = 200


class DailyStat(models.Model):
    day = models.DateField()
    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="daily_stats")
    channel = models.CharField(max_length=20)
    messages = models.PositiveIntegerField(default=0)
    user_messages = models.PositiveIntegerField(default=0)
    bot_messages = models.PositiveIntegerField(default=0)
    sessions = models.PositiveIntegerField(default=0)
    new_sessions = models.PositiveIntegerField(default=0)
    active_users = models.PositiveIntegerField(default=0)
    llm_answers = models.PositiveIntegerField(default=0)
    cached_answers = models.PositiveIntegerField(default=0)
    offline_answers = models.PositiveIntegerField(default=0)
    unanswered = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    # {model: [prompt tokens, completion tokens]}: cost is priced per model at read time.
    tokens_by_model = models.JSONField(default=dict, blank=True)
    tool_calls = models.PositiveIntegerField(default=0)
    tool_errors = models.PositiveIntegerField(default=0)
    # {tool name: [calls, errors]}
    tools = models.JSONField(default=dict, blank=True)
    latency_count = models.PositiveIntegerField(default=0)
    latency_sum_ms = models.PositiveBigIntegerField(default=0)
    # len(LATENCY_BUCKETS_MS) + 1 counts: bucket i holds latencies <= LATENCY_BUCKETS_MS[i] (and above the
    # previous bound); the last one holds the rest.
    latency_histogram = ArrayField(models.PositiveIntegerField(), default=list, blank=True)
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "bot", "channel"], name="analytics_daily_unique")]
        indexes = [models.Index(fields=["day"], name="analytics_daily_day_idx")]

    def __str__(self) -> str:
        return f"{self.day} {self.bot_id}/{self.channel}"


class DailyQuestion(models.Model):
    """A normalised user question of one day and bot: how often it was asked, how often left unanswered.

    Only the day's head is kept (QUESTIONS_PER_DAY in services): the top by asks plus the top by
    unanswered, so a range's top list is exact for questions that made a day's head."""

    day = models.DateField()
    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="daily_questions")
    text = models.CharField(max_length=QUESTION_MAX_CHARS)
    asked = models.PositiveIntegerField(default=0)
    unanswered = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "bot", "text"], name="analytics_question_unique")]
        indexes = [models.Index(fields=["day", "bot"], name="analytics_question_day_idx")]

    def __str__(self) -> str:
        return f"{self.day} {self.text[:40]}"

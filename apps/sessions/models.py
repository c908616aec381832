"""Chat users, sessions and messages of a tenant (spec 6.1).

A session is one conversation of one user with one bot on one channel. Everything a dialog needs to
continue after a restart lives in `ChatSession.state` (the suspended VM's JSON state, the session's KBs,
tools, suggestions and context), so any web process can take the next turn.
"""

import uuid

from django.db import models

from apps.bots.models import Bot
from apps.sessions.fields import TenantSealedTextField


class Role(models.IntegerChoices):
    """Message roles, numbered as upstream's message_history (9 = episodic summary)."""

    USER = 1, "user"
    ASSISTANT = 2, "assistant"
    SYSTEM = 3, "system"
    TOOL = 4, "tool"
    EPISODIC = 9, "episodic"


class MessageType(models.IntegerChoices):
    """Upstream's message types (botlib message_types), used on the wire and stored with each message."""

    EXTERNAL = 0, "external"
    USER = 1, "user"
    BOT_RESPONSE = 2, "bot response"
    CONTINUE = 3, "continue"
    SUGGESTION = 4, "suggestion"
    CONTEXT_CHANGE = 5, "context change"
    TOOL_EXEC = 6, "tool exec"
    SYSTEM = 7, "system"
    SWITCHER_TOGGLE = 8, "switcher toggle"


class ChatUser(models.Model):
    """Who a session belongs to: an anonymous web visitor, an e-mail address, a phone number..."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    username = models.CharField(max_length=150)
    email = models.CharField(max_length=254, blank=True)
    # The address on the user's channel (e-mail address, phone...); empty for anonymous web visitors.
    external_id = models.CharField(max_length=255, blank=True, db_index=True)
    is_anonymous = models.BooleanField(default=True)
    # SET USER MEMORY / REMEMBER values: {key: {"value": ..., "expires": iso | None}}.
    memory = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.username


class ChatSession(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(ChatUser, on_delete=models.CASCADE, related_name="sessions")
    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="sessions")
    channel = models.CharField(max_length=20, default="web")
    title = models.CharField(max_length=200, default="New Conversation")
    # Groups the messages of one outside thread (an e-mail thread's root Message-ID) into one session.
    thread_key = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_activity = models.DateTimeField(auto_now=True)
    message_count = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)
    # {"started", "dialog": {"script", "vm"} | None, "kbs", "tools", "suggestions", "system_prompt",
    #  "context": {name: value}, "active_context"}: see apps.sessions.state.
    state = models.JSONField(default=dict, blank=True)
    # When the WAIT the dialog is suspended at is over (its `chat.resume_wait` is due); null unless the dialog
    # waits at a WAIT. Written by the turn with the state; beat's lost-wait sweep finds overdue ones by it
    # (services.waits_requeue_lost) and moves it to when it queued the resume again.
    wait_due_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_activity"]
        indexes = [
            models.Index(fields=["bot", "channel", "user"], name="chat_session_owner_idx"),
            models.Index(fields=["bot", "-last_activity"], name="chat_session_recent_idx"),
            models.Index(fields=["bot", "channel", "thread_key"], name="chat_session_thread_idx"),
            # The console's conversation list: newest first, stopping after a page (apps.analytics).
            models.Index(fields=["-last_activity", "-id"], name="chat_session_activity_idx"),
            # The lost-wait sweep, every minute: only the few sessions waiting at a WAIT are in it.
            models.Index(fields=["wait_due_at"], name="chat_session_wait_due_idx",
                         condition=models.Q(wait_due_at__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.bot.name}/{self.id}"


class Message(models.Model):
    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="messages")
    # 0-based position in the session (spec 6.1); clients resume from the last index they saw.
    index = models.PositiveIntegerField()
    role = models.PositiveSmallIntegerField(choices=Role.choices)
    message_type = models.PositiveSmallIntegerField(choices=MessageType.choices, default=MessageType.USER)
    content = TenantSealedTextField(blank=True)
    tokens = models.PositiveIntegerField(default=0)
    model = models.CharField(max_length=200, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    # {"tool_calls": [{"name", "arguments", "result"}], "citations": [{"source", "kb"}], "cached": bool,
    #  "script": name, "offline": bool}
    meta = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["session", "index"]
        constraints = [models.UniqueConstraint(fields=["session", "index"], name="chat_message_index_unique")]
        indexes = [models.Index(fields=["created_at"], name="chat_message_created_idx")]

    def __str__(self) -> str:
        return f"{self.session_id}#{self.index}"
